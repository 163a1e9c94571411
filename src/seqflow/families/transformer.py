"""``model=transformer``: the CTC encoder plus a Transformer decoder (Vaswani et al. 2017), joint
CTC/attention loss, attention beam search with CTC rescoring. Registered as
``seqflow-asr-transformer``."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from seqflow.families.asr import asr_family, module_kwargs


def build_net(cfg: DictConfig, vocab_size: int):
    from seqflow.models.asr_transformer import TransformerASR

    return TransformerASR(int(cfg.model.features.n_mels), int(vocab_size),
                          **OmegaConf.to_container(cfg.model.net, resolve=True))


def build_module(cfg: DictConfig, net, tokenizer):
    from seqflow.lit.asr import TransformerASRModule

    kw = module_kwargs(cfg)
    return TransformerASRModule(net, tokenizer, kw.pop("features"), kw.pop("spec_augment"),
                                label_smoothing=float(cfg.model.optim.get("label_smoothing", 0.1)), **kw)


FAMILY = asr_family("transformer", build_net, build_module)
