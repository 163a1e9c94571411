"""Build the configured network and LightningModule from the seqflow config (one place).

Speech recognizers (``model=ctc`` | ``model=transformer``) need the tokenizer the shard stage
trained (``<shard set>/tokenizer``): its ``vocab_size`` sizes the output layer.
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from seqflow.errors import ConfigError

ASR_MODELS = ("ctc", "transformer")


def _asr_vocab_size(cfg: DictConfig, vocab_size: int | None) -> int:
    if vocab_size is None:
        raise ConfigError(f"model={cfg.model.name} needs the tokenizer's vocab_size (pass tokenizer_dir)")
    return int(vocab_size)


def build_net(cfg: DictConfig, vocab_size: int | None = None) -> nn.Module:
    """The architecture of ``cfg.model`` as a plain ``nn.Module``.

    Args:
        vocab_size: V of the tokenizer (blank and specials included); required for ``ctc`` and
            ``transformer``, ignored for ``trigger_word``.
    Raises:
        ConfigError: unknown model, or an ASR model without ``vocab_size``.
    """
    name = cfg.model.name
    net_kw = OmegaConf.to_container(cfg.model.net, resolve=True)
    n_mels = int(cfg.model.features.n_mels)
    if name == "trigger_word":
        from seqflow.models.trigger_word import TriggerWordNet

        return TriggerWordNet(n_mels=n_mels, **net_kw)
    if name == "ctc":
        from seqflow.models.ctc import CTCModel

        return CTCModel(n_mels, _asr_vocab_size(cfg, vocab_size), **net_kw)
    if name == "transformer":
        from seqflow.models.asr_transformer import TransformerASR

        return TransformerASR(n_mels, _asr_vocab_size(cfg, vocab_size), **net_kw)
    raise ConfigError(f"unknown model {name!r}")


def _load_tokenizer(cfg: DictConfig, tokenizer_dir: str | Path | None):
    if cfg.model.name not in ASR_MODELS:
        return None
    if tokenizer_dir is None:
        raise ConfigError(f"model={cfg.model.name} needs tokenizer_dir (the shard set's tokenizer/ folder)")
    from seqflow.text.tokenizers import load_tokenizer

    return load_tokenizer(tokenizer_dir)


def build_module(cfg: DictConfig, tokenizer_dir: str | Path | None = None):
    """The LightningModule (training logic) around :func:`build_net`.

    ``tokenizer_dir``: a saved tokenizer (required for ``ctc`` / ``transformer``).
    """
    tokenizer = _load_tokenizer(cfg, tokenizer_dir)
    net = build_net(cfg, None if tokenizer is None else tokenizer.vocab_size)
    o = cfg.model.optim
    features = OmegaConf.to_container(cfg.model.features, resolve=True)
    spec_augment = OmegaConf.to_container(cfg.model.spec_augment, resolve=True) if cfg.model.get("spec_augment") else None
    if cfg.model.name == "trigger_word":
        from seqflow.lit.trigger_word import TriggerWordModule

        return TriggerWordModule(net, features, spec_augment,
                                 lr=float(o.lr), weight_decay=float(o.weight_decay),
                                 pos_weight=float(o.pos_weight), scheduler=str(o.get("scheduler", "none")),
                                 label_seconds=float(cfg.clips.label_seconds))
    common = dict(lr=float(o.lr), weight_decay=float(o.get("weight_decay", 0.0)),
                  warmup_steps=int(o.get("warmup_steps", 200)), scheduler=str(o.get("scheduler", "noam")))
    if cfg.model.name == "ctc":
        from seqflow.lit.asr import CTCModule

        return CTCModule(net, tokenizer, features, spec_augment, **common)
    if cfg.model.name == "transformer":
        from seqflow.lit.asr import TransformerASRModule

        return TransformerASRModule(net, tokenizer, features, spec_augment,
                                    label_smoothing=float(o.get("label_smoothing", 0.1)), **common)
    raise ConfigError(f"unknown model {cfg.model.name!r}")


def load_net_from_checkpoint(cfg: DictConfig, checkpoint_file: str | Path,
                             tokenizer_dir: str | Path | None = None) -> nn.Module:
    """The trained ``net`` from a Lightning checkpoint (``state_dict`` keys ``net.*``), in eval mode.

    ``tokenizer_dir``: the tokenizer the net was trained with (required for ``ctc`` / ``transformer``).
    """
    tokenizer = _load_tokenizer(cfg, tokenizer_dir)
    state = torch.load(checkpoint_file, map_location="cpu", weights_only=False)["state_dict"]
    net = build_net(cfg, None if tokenizer is None else tokenizer.vocab_size)
    net.load_state_dict({k[len("net."):]: v for k, v in state.items() if k.startswith("net.")})
    return net.eval()
