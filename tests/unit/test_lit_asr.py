"""CTCModule and TransformerASRModule with a real Lightning Trainer on CPU and a real CharTokenizer."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from seqflow.config import load_config
from seqflow.errors import ConfigError
from seqflow.lit.asr import CTCModule, TransformerASRModule
from seqflow.lit.factory import build_module, build_net, load_net_from_checkpoint
from seqflow.models.asr_transformer import TransformerASR
from seqflow.models.ctc import CTCModel
from seqflow.text.tokenizers import CharTokenizer

SR = 16000
FEATURES = {"sample_rate": SR, "n_fft": 512, "win_length": 400, "hop_length": 160, "n_mels": 40,
            "normalize": "per_feature"}
SPEC_AUG = {"freq_masks": 1, "freq_width": 4, "time_masks": 1, "time_width": 0.05}
TEXTS = ["turn on the light", "hello", "set a timer", "go left", "stop", "play music"]
TOK = CharTokenizer.from_texts(TEXTS)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Beam search runs many tiny ops: one intra-op thread is much faster on a busy 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _batch(rng: np.random.Generator, texts: list[str]) -> dict:
    """Noise waveforms (1.0-1.6 s, zero-padded) with real token ids of ``texts``."""
    n = [int(rng.integers(SR, int(1.6 * SR))) for _ in texts]
    audio = np.zeros((len(texts), max(n)), dtype=np.float32)
    for i, m in enumerate(n):
        audio[i, :m] = 0.1 * rng.standard_normal(m)
    ids = [TOK.encode(t) for t in texts]
    tokens = torch.zeros(len(ids), max(map(len, ids)), dtype=torch.long)
    for i, x in enumerate(ids):
        tokens[i, :len(x)] = torch.tensor(x)
    return {"audio": torch.from_numpy(audio), "audio_lengths": torch.tensor(n), "tokens": tokens,
            "token_lengths": torch.tensor([len(x) for x in ids]), "texts": list(texts),
            "keys": [f"k{i}" for i in range(len(texts))]}


def _trainer(**kw) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, **kw)


def _ctc(**kw) -> CTCModule:
    torch.manual_seed(0)
    net = CTCModel(40, TOK.vocab_size, d_model=32, num_heads=2, num_layers=1, d_ff=64, dropout=0.1)
    return CTCModule(net, TOK, FEATURES, SPEC_AUG, lr=2e-3, warmup_steps=2, **kw)


def _transformer(**kw) -> TransformerASRModule:
    torch.manual_seed(0)
    net = TransformerASR(40, TOK.vocab_size, d_model=32, num_heads=2, enc_layers=1, dec_layers=1, d_ff=64,
                         dropout=0.1, ctc_weight=0.3)
    return TransformerASRModule(net, TOK, FEATURES, SPEC_AUG, lr=2e-3, warmup_steps=2, label_smoothing=0.1, **kw)


@pytest.mark.parametrize("make", [_ctc, _transformer], ids=["ctc", "transformer"])
def test_few_steps_loss_finite_metrics_logged(make) -> None:
    rng = np.random.default_rng(0)
    module = make()
    train = [_batch(rng, TEXTS[i:i + 3]) for i in (0, 3, 0)]
    val = [_batch(rng, TEXTS[:3]), _batch(rng, TEXTS[3:])]
    trainer = _trainer(max_steps=3, limit_val_batches=2, num_sanity_val_steps=0)
    trainer.fit(module, DataLoader(train, batch_size=None), DataLoader(val, batch_size=None))
    m = trainer.callback_metrics
    assert torch.isfinite(m["train/loss"]) and m["train/loss"] > 0
    assert {"val/loss", "val/wer", "val/cer", "train/lr"} <= set(m)
    assert torch.isfinite(m["val/loss"])
    assert 0.0 <= float(m["val/cer"]) and float(m["val/wer"]) >= 0.0
    assert module.samples_seen == 9 and module.nonfinite_batches == 0
    if isinstance(module, TransformerASRModule):
        assert {"train/ctc_loss", "train/att_loss"} <= set(m)


def test_noam_warmup_reaches_peak_lr_then_decays() -> None:
    module = _ctc()
    module.hparams.warmup_steps = 4
    cfg = module.configure_optimizers()
    opt, sched = cfg["optimizer"], cfg["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(12):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(2e-3 / 4) and max(lrs) == pytest.approx(2e-3) and lrs.index(max(lrs)) == 3
    assert lrs[-1] == pytest.approx(2e-3 * (4 / 12) ** 0.5)


def test_too_short_utterance_gives_finite_loss_and_nonfinite_guard() -> None:
    module = _ctc().train()
    batch = _batch(np.random.default_rng(1), ["turn on the light"] * 2)
    batch["audio"], batch["audio_lengths"] = batch["audio"][:, :1600], torch.tensor([1600, 1600])  # 0.1 s: T'=1
    loss, _, _ = module._step(batch, augment=True)
    assert torch.isfinite(loss)  # zero_infinity: infeasible CTC adds 0, never inf
    guarded = module._guard(torch.tensor(float("nan")), batch)
    assert guarded.item() == 0.0 and guarded.requires_grad and module.nonfinite_batches == 1
    guarded.backward()
    assert all(p.grad is not None and torch.all(p.grad == 0) for p in module.net.parameters())


def test_mismatched_tokenizer_and_scheduler_rejected() -> None:
    net = CTCModel(40, TOK.vocab_size + 1, d_model=16, num_heads=2, num_layers=1, d_ff=32)
    with pytest.raises(ConfigError, match="tokens"):
        CTCModule(net, TOK, FEATURES)
    with pytest.raises(ConfigError, match="scheduler"):
        _ctc(scheduler="cosine")


@pytest.mark.parametrize("name", ["ctc", "transformer"])
def test_factory_builds_from_the_real_config_and_reloads_a_checkpoint(name, tmp_path) -> None:
    tok_dir = tmp_path / "tokenizer"
    TOK.save(tok_dir)
    cfg = load_config([f"model={name}", "model.net.d_model=32", "model.net.d_ff=64"])
    with pytest.raises(ConfigError, match="tokenizer"):
        build_module(cfg)
    with pytest.raises(ConfigError, match="vocab_size"):
        build_net(cfg)
    module = build_module(cfg, tokenizer_dir=tok_dir)
    assert module.net.vocab_size == TOK.vocab_size and module.hparams.scheduler == "noam"
    trainer = _trainer(max_steps=1, limit_val_batches=0)
    rng = np.random.default_rng(2)
    trainer.fit(module, DataLoader([_batch(rng, TEXTS[:2])], batch_size=None))
    ckpt = tmp_path / "last.ckpt"
    trainer.save_checkpoint(ckpt)
    net = load_net_from_checkpoint(cfg, ckpt, tokenizer_dir=tok_dir)
    for k, v in module.net.state_dict().items():
        assert torch.equal(v, net.state_dict()[k]), k
    assert not net.training


def test_trigger_word_factory_path_unchanged() -> None:
    cfg = load_config(["model=trigger_word"])
    module = build_module(cfg)
    assert type(module).__name__ == "TriggerWordModule"
    assert OmegaConf.to_container(cfg.model.net)["conv_kernel"] == module.net.conv_kernel
