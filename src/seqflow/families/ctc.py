"""``model=ctc``: conv subsampling → Transformer encoder → linear, trained with CTC (Graves et al.
2006); greedy or prefix beam search decoding. Registered as ``seqflow-asr-ctc``."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from seqflow.families.asr import asr_family, module_kwargs


def build_net(cfg: DictConfig, vocab_size: int):
    from seqflow.models.ctc import CTCModel

    return CTCModel(int(cfg.model.features.n_mels), int(vocab_size), **OmegaConf.to_container(cfg.model.net, resolve=True))


def build_module(cfg: DictConfig, net, tokenizer):
    from seqflow.lit.asr import CTCModule

    kw = module_kwargs(cfg)
    return CTCModule(net, tokenizer, kw.pop("features"), kw.pop("spec_augment"), **kw)


FAMILY = asr_family("ctc", build_net, build_module)
