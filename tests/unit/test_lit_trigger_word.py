"""TriggerWordModule with a real Lightning Trainer on CPU: runs, logs, schedules, and learns."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from seqflow.errors import ConfigError
from seqflow.lit.trigger_word import TriggerWordModule
from seqflow.models.trigger_word import StepGeometry, TriggerWordNet, output_steps
from seqflow.shards.labels import frame_labels

SR, HOP, K, STRIDE = 16000, 160, 15, 4
FEATURES = {"sample_rate": SR, "n_fft": 512, "win_length": 400, "hop_length": HOP, "n_mels": 40}
SPEC_AUG = {"freq_masks": 1, "freq_width": 4, "time_masks": 1, "time_width": 0.03}


def _tone_batch(rng: np.random.Generator, batch: int = 12, seconds: float = 1.5) -> dict:
    """Noise clips; about half hold a 0.25 s 1.2 kHz tone burst whose end is a positive end."""
    n = int(seconds * SR)
    audio = (0.05 * rng.standard_normal((batch, n))).astype(np.float32)
    positive_ends = []
    for i in range(batch):
        ends = []
        if rng.random() < 0.6:
            start = rng.uniform(0.1, seconds - 0.5)
            t = np.arange(int(0.25 * SR)) / SR
            s0 = int(start * SR)
            audio[i, s0:s0 + t.size] += 0.5 * np.sin(2 * np.pi * 1200 * t).astype(np.float32)
            ends.append(start + 0.25)
        positive_ends.append(ends)
    return {"audio": torch.from_numpy(audio), "audio_lengths": torch.full((batch,), n, dtype=torch.long),
            "positive_ends": positive_ends, "keys": [f"k{i}" for i in range(batch)], "texts": [""] * batch}


def _random_batch(rng: np.random.Generator, batch: int = 4) -> dict:
    n = [SR * 2, SR * 2 - 3000, SR, SR * 2][:batch]
    audio = np.zeros((batch, max(n)), dtype=np.float32)
    for i, m in enumerate(n):
        audio[i, :m] = 0.1 * rng.standard_normal(m)
    ends = [sorted(rng.uniform(0, m / SR, int(rng.integers(0, 3))).tolist()) for m in n]
    return {"audio": torch.from_numpy(audio), "audio_lengths": torch.tensor(n), "positive_ends": ends,
            "keys": [str(i) for i in range(batch)], "texts": [""] * batch}


def _loader(batches: list[dict]) -> DataLoader:
    return DataLoader(batches, batch_size=None, shuffle=False)


def _trainer(**kw) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, **kw)


def _module(conv_stride: int = STRIDE, label_seconds: float = 0.32, **kw) -> TriggerWordModule:
    """Label window 0.32 s = 8 steps of 40 ms."""
    torch.manual_seed(0)
    net = TriggerWordNet(n_mels=40, conv_channels=32, gru_hidden=32, dropout=0.1, conv_stride=conv_stride)
    return TriggerWordModule(net, FEATURES, SPEC_AUG, label_seconds=label_seconds, **kw)


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


def _old_shard_time_labels(ends: list[float], num_samples: int, label_steps: int) -> np.ndarray:
    """What the shard stage stored before (layout <= 2) for the default geometry, by hand."""
    ty = (1 + num_samples // HOP - K) // STRIDE + 1
    out = np.zeros(ty, dtype=np.float32)
    for e in ends:
        first = max(0, -(-(1 + int(round(e * SR, 6)) // HOP - (K - 1)) // STRIDE))
        out[first:first + label_steps] = 1
    return out


def test_labels_are_derived_from_positive_ends_like_the_old_shard_labels() -> None:
    module = _module(label_seconds=2.0).eval()
    n = 10 * SR
    batch = {"audio": torch.zeros(3, n), "audio_lengths": torch.tensor([n, n, 6 * SR]),
             "positive_ends": [[2.0], [], [0.77, 4.1]], "keys": ["a", "b", "c"], "texts": [""] * 3}
    logits, labels, mask = module._logits_and_mask(batch, augment=False)
    assert module.label_steps == 50 and labels.shape == logits.shape == (3, 247)
    assert torch.nonzero(labels[0]).flatten().tolist() == list(range(47, 97))  # known example: end 2.0 s
    assert not labels[1].any()
    for row, ends in zip(labels, batch["positive_ends"]):
        assert row.numpy().tolist() == _old_shard_time_labels(ends, n, 50).tolist()
    assert mask[2].sum().item() == output_steps(6 * SR, HOP, K, STRIDE)
    with pytest.raises(KeyError, match="positive_ends"):
        module._logits_and_mask({k: v for k, v in batch.items() if k != "positive_ends"}, augment=False)


def test_other_conv_stride_labels_the_same_seconds_from_the_same_batch() -> None:
    batch = {"audio": torch.zeros(1, 10 * SR), "audio_lengths": torch.tensor([10 * SR]),
             "positive_ends": [[3.0]], "keys": ["a"], "texts": [""]}
    for stride, steps in ((4, 50), (2, 100)):
        module = _module(conv_stride=stride, label_seconds=2.0).eval()
        logits, labels, _ = module._logits_and_mask(batch, augment=False)
        on = torch.nonzero(labels[0]).flatten().numpy()
        assert module.label_steps == steps == on.size and labels.shape == logits.shape
        g = StepGeometry(K, stride)
        step_s = g.step_seconds(SR, HOP)
        assert 3.0 <= g.step_to_seconds(on[0], SR, HOP) < 3.0 + HOP / SR + step_s  # frame after the end, then a step
        assert on.size * step_s == pytest.approx(2.0)
        assert labels[0].numpy().tolist() == frame_labels([3.0], 10 * SR, SR, HOP, g, steps).tolist()


def test_label_seconds_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="label_seconds"):
        _module(label_seconds=0.0)


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
    pos = module.labels(test, probs.shape[1]) > 0
    assert probs[pos].mean() > 0.5 > probs[~pos].mean()
