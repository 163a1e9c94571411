"""TriggerWordModule with a real Lightning Trainer on CPU: runs, logs, schedules, and learns."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from seqflow.errors import ConfigError
from seqflow.lit.trigger_word import TriggerWordModule
from seqflow.models.trigger_word import TriggerWordNet, output_steps
from seqflow.shards.labels import frame_labels

SR, HOP, K, STRIDE = 16000, 160, 15, 4
FEATURES = {"sample_rate": SR, "n_fft": 512, "win_length": 400, "hop_length": HOP, "n_mels": 40}
SPEC_AUG = {"freq_masks": 1, "freq_width": 4, "time_masks": 1, "time_width": 0.03}


def _tone_batch(rng: np.random.Generator, batch: int = 12, seconds: float = 1.5, label_steps: int = 8) -> dict:
    """Noise clips; about half hold a 0.25 s 1.2 kHz tone burst whose end is labelled."""
    n = int(seconds * SR)
    audio = (0.05 * rng.standard_normal((batch, n))).astype(np.float32)
    labels = []
    for i in range(batch):
        ends = []
        if rng.random() < 0.6:
            start = rng.uniform(0.1, seconds - 0.5)
            t = np.arange(int(0.25 * SR)) / SR
            s0 = int(start * SR)
            audio[i, s0:s0 + t.size] += 0.5 * np.sin(2 * np.pi * 1200 * t).astype(np.float32)
            ends.append(start + 0.25)
        labels.append(frame_labels(ends, n, SR, HOP, K, STRIDE, label_steps).astype(np.float32))
    return {"audio": torch.from_numpy(audio), "audio_lengths": torch.full((batch,), n, dtype=torch.long),
            "labels": torch.from_numpy(np.stack(labels)), "keys": [f"k{i}" for i in range(batch)],
            "texts": [""] * batch}


def _random_batch(rng: np.random.Generator, batch: int = 4) -> dict:
    n = [SR * 2, SR * 2 - 3000, SR, SR * 2][:batch]
    audio = np.zeros((batch, max(n)), dtype=np.float32)
    for i, m in enumerate(n):
        audio[i, :m] = 0.1 * rng.standard_normal(m)
    ty = output_steps(max(n), HOP, K, STRIDE)
    return {"audio": torch.from_numpy(audio), "audio_lengths": torch.tensor(n),
            "labels": torch.from_numpy((rng.random((batch, ty)) < 0.2).astype(np.float32)),
            "keys": [str(i) for i in range(batch)], "texts": [""] * batch}


def _loader(batches: list[dict]) -> DataLoader:
    return DataLoader(batches, batch_size=None, shuffle=False)


def _trainer(**kw) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, **kw)


def _module(**kw) -> TriggerWordModule:
    torch.manual_seed(0)
    net = TriggerWordNet(n_mels=40, conv_channels=32, gru_hidden=32, dropout=0.1)
    return TriggerWordModule(net, FEATURES, SPEC_AUG, **kw)


def test_fast_dev_run_loss_finite_and_samples_counted() -> None:
    rng = np.random.default_rng(0)
    module = _module(pos_weight=2.0)
    trainer = _trainer(fast_dev_run=2)
    trainer.fit(module, _loader([_random_batch(rng) for _ in range(3)]), _loader([_random_batch(rng)]))
    loss = trainer.callback_metrics["train/loss"]
    assert torch.isfinite(loss) and loss > 0
    assert module.samples_seen == 8
    assert {"val/loss", "val/frame_acc", "val/frame_f1"} <= set(trainer.callback_metrics)


def test_padding_steps_are_masked() -> None:
    rng = np.random.default_rng(1)
    module = _module().eval()
    batch = _random_batch(rng)
    logits, labels, mask = module._logits_and_mask(batch, augment=False)
    # clip 2 has 1 s of audio → only its own 22 steps count
    assert mask[2].sum().item() == output_steps(SR, HOP, K, STRIDE) == 22
    assert mask[0].all() and logits.shape == labels.shape == mask.shape


@pytest.mark.parametrize("name", ["cosine", "onecycle"])
def test_schedulers_configure(name: str) -> None:
    rng = np.random.default_rng(2)
    module = _module(scheduler=name)
    trainer = _trainer(max_epochs=2, limit_val_batches=0)
    trainer.fit(module, _loader([_random_batch(rng) for _ in range(2)]))
    assert trainer.lr_scheduler_configs and trainer.global_step == 4


def test_unknown_scheduler_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="scheduler"):
        _module(scheduler="linear")


class _Losses(pl.Callback):
    def __init__(self) -> None:
        self.values: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.values.append(float(outputs["loss"]))


def test_learns_tone_burst_trigger() -> None:
    rng = np.random.default_rng(0)
    batches = [_tone_batch(rng) for _ in range(20)]
    module = _module(lr=3e-3, pos_weight=2.0)
    losses = _Losses()
    _trainer(max_epochs=4, callbacks=[losses]).fit(module, _loader(batches))  # 80 steps, ~5 s on 2 idle cores
    first, last = np.mean(losses.values[:10]), np.mean(losses.values[-10:])
    assert len(losses.values) == 80
    assert last < 0.5 * first, (first, last)
    # and the trained model fires after the tone in a fresh clip, not in the noise
    module.eval()
    test = _tone_batch(np.random.default_rng(99), batch=8)
    with torch.no_grad():
        probs = module(test["audio"], test["audio_lengths"])
    pos = test["labels"] > 0
    assert probs[pos].mean() > 0.5 > probs[~pos].mean()
