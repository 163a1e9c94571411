"""Build the configured network and LightningModule through the model's family (one place).

The family (``cfg.model.family``, see :mod:`seqflow.families`) owns the architecture and the
training logic; this module only adds what every family shares: the tokenizer the shard stage
trained (``<shard set>/tokenizer``, whose ``vocab_size`` sizes an ASR output layer) and loading
the net from a Lightning checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn

from seqflow.errors import ConfigError
from seqflow.families import get_family


def load_tokenizer(cfg: DictConfig, tokenizer_dir: str | Path | None):
    """The family's tokenizer (None for families without one).

    Raises:
        ConfigError: the family needs a tokenizer and ``tokenizer_dir`` is None.
    """
    if not get_family(cfg).uses_tokenizer:
        return None
    if tokenizer_dir is None:
        raise ConfigError(f"model={cfg.model.name} needs tokenizer_dir (the shard set's tokenizer/ folder)")
    from seqflow.text.tokenizers import load_tokenizer as load

    return load(tokenizer_dir)


def build_net(cfg: DictConfig, vocab_size: int | None = None) -> nn.Module:
    """The architecture of ``cfg.model`` as a plain ``nn.Module`` (``vocab_size``: V of the
    tokenizer, blank and specials included; required by families with a tokenizer)."""
    fam = get_family(cfg)
    if fam.uses_tokenizer and vocab_size is None:
        raise ConfigError(f"model={cfg.model.name} needs the tokenizer's vocab_size (pass tokenizer_dir)")
    return fam.build_net(cfg, vocab_size)


def build_module(cfg: DictConfig, tokenizer_dir: str | Path | None = None):
    """The family's LightningModule around :func:`build_net` (``tokenizer_dir`` for ASR)."""
    tokenizer = load_tokenizer(cfg, tokenizer_dir)
    net = build_net(cfg, None if tokenizer is None else tokenizer.vocab_size)
    return get_family(cfg).build_module(cfg, net, tokenizer)


def load_net_from_checkpoint(cfg: DictConfig, checkpoint_file: str | Path,
                             tokenizer_dir: str | Path | None = None) -> nn.Module:
    """The trained ``net`` from a Lightning checkpoint (``state_dict`` keys ``net.*``), in eval mode.

    Loaded with ``weights_only=True``: a checkpoint holds tensors and plain values, never code.
    """
    tokenizer = load_tokenizer(cfg, tokenizer_dir)
    state = torch.load(checkpoint_file, map_location="cpu", weights_only=True)["state_dict"]
    net = build_net(cfg, None if tokenizer is None else tokenizer.vocab_size)
    net.load_state_dict({k[len("net."):]: v for k, v in state.items() if k.startswith("net.")})
    return net.eval()
