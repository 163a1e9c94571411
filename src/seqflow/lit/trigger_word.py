"""Training logic of the trigger-word model: log-mel + SpecAugment on the device, frame BCE.

The architecture is a plain ``nn.Module`` passed in as ``net``
(:class:`seqflow.models.trigger_word.TriggerWordNet`); this module knows nothing of Ray or MLflow.
Course: Ng, *Sequence Models*, week 3 (trigger word detection) — per-step binary labels, 1 for
``label_seconds`` (as ``round(label_seconds / step_s)`` output steps) right after each trigger word
ends. Labels are derived here, per batch, from the positive end times and the net's own step
geometry (:func:`seqflow.shards.labels.batch_labels`), never read from the shards.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import BinaryAccuracy, BinaryF1Score

from seqflow.audio.features import LogMel, SpecAugment
from seqflow.errors import ConfigError
from seqflow.shards.labels import batch_labels, label_window_steps

_LOGMEL_KEYS = ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels", "f_min", "f_max")
SCHEDULERS = ("none", "cosine", "onecycle")


def build_logmel(features: Mapping[str, Any]) -> LogMel:
    """``LogMel`` from a feature config (``cfg.model.features``); unknown keys are ignored."""
    return LogMel(**{k: features[k] for k in _LOGMEL_KEYS if k in features})


class TriggerWordModule(pl.LightningModule):
    """LightningModule for frame-level trigger-word detection.

    Batches are the loader's dicts: ``audio (B, S)`` float32 zero-padded at 16 kHz,
    ``audio_lengths (B,)``, ``positive_ends``: B lists of trigger-word end times [s]. The step
    computes log-mel ``(B, T, F)`` (and SpecAugment while training) on the training device, runs
    ``net`` to logits ``(B, T')``, derives labels ``(B, T')`` float 0/1 per output step from
    ``positive_ends`` at the net's step geometry (window ``label_seconds``), and takes
    BCE-with-logits over the valid steps of each clip (``t <`` the clip's own step count).

    Args:
        net: network mapping ``(B, T, F)`` → ``(logits (B, T'), h_n)`` with the step geometry of
            :class:`~seqflow.models.trigger_word.StepGeometry` (``num_steps``, ``seconds_to_step``, ...).
        features: LogMel settings (``cfg.model.features``). spec_augment: SpecAugment settings
            (``cfg.model.spec_augment``), ``None`` for no augmentation.
        label_seconds: seconds labelled 1 after each positive ends (``clips.label_seconds``).
        lr, weight_decay: Adam settings. pos_weight: BCE weight of label-1 steps.
        scheduler: ``none`` | ``cosine`` (per epoch over ``trainer.max_epochs``) | ``onecycle``
            (per step; needs a finite ``trainer.estimated_stepping_batches``).

    Attributes:
        samples_seen: training clips seen by this rank (for the launcher's throughput metric).

    Logged: ``train/loss`` (per step, this rank), ``val/loss``, ``val/frame_acc``, ``val/frame_f1``
    (per epoch, synchronised over ranks).
    """

    def __init__(self, net: nn.Module, features: Mapping[str, Any], spec_augment: Mapping[str, Any] | None = None,
                 lr: float = 2e-3, weight_decay: float = 1e-4, pos_weight: float = 1.0,
                 scheduler: str = "none", label_seconds: float = 2.0) -> None:
        super().__init__()
        if scheduler not in SCHEDULERS:
            raise ConfigError(f"model.optim.scheduler: {scheduler!r} is not one of {SCHEDULERS}")
        if not label_seconds > 0:
            raise ConfigError(f"clips.label_seconds: must be > 0, got {label_seconds!r}")
        self.save_hyperparameters(ignore=["net"])
        self.net = net
        self.logmel = build_logmel(features)
        self.spec_augment = SpecAugment(**dict(spec_augment)) if spec_augment else nn.Identity()
        self.register_buffer("pos_weight", torch.tensor(float(pos_weight)), persistent=False)
        self.samples_seen = 0
        self.val_acc = BinaryAccuracy()
        self.val_f1 = BinaryF1Score()

    def forward(self, audio: torch.Tensor, audio_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Waveform ``(B, S)`` → step probabilities ``(B, T')`` (eval-style, no augmentation)."""
        feats, _ = self.logmel(audio, audio_lengths)
        logits, _ = self.net(feats)
        return torch.sigmoid(logits)

    @property
    def label_steps(self) -> int:
        """Output steps labelled 1 after each positive: ``round(label_seconds / step_s)`` at the net's stride."""
        return label_window_steps(self.hparams.label_seconds, self.net, self.logmel.sample_rate,
                                  self.logmel.hop_length)

    def labels(self, batch: Mapping[str, Any], num_steps: int) -> torch.Tensor:
        """Per-step 0/1 labels ``(B, num_steps)`` float32 (CPU) of a batch, from ``batch["positive_ends"]``
        (B lists of end times [s]) at the net's step geometry; ``num_steps``: T' of the padded batch."""
        if "positive_ends" not in batch:
            raise KeyError("trigger-word batch without 'positive_ends' (the positive segment end times "
                           "[s] per clip, see seqflow.shards.reader.collate)")
        lab = batch_labels(batch["positive_ends"], int(batch["audio"].shape[1]), self.logmel.sample_rate,
                           self.logmel.hop_length, self.net, self.hparams.label_seconds)
        if lab.shape[1] != num_steps:
            raise ValueError(f"labels have {lab.shape[1]} steps but the net produced {num_steps} "
                             "(front end frame count differs from 1 + S // hop_length)")
        return torch.from_numpy(lab)

    def _logits_and_mask(self, batch: Mapping[str, Any], augment: bool
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns ``(logits (B, T'), labels (B, T'), mask (B, T') bool)``; labels from :meth:`labels`."""
        audio, lengths = batch["audio"], batch["audio_lengths"]
        feats, frame_lengths = self.logmel(audio, lengths)
        if augment:
            feats = self.spec_augment(feats)
        logits, _ = self.net(feats)
        labels = self.labels(batch, logits.shape[1]).to(device=logits.device, dtype=logits.dtype)
        steps = self.net.num_steps(frame_lengths)  # valid steps per clip (B,)
        mask = torch.arange(logits.shape[1], device=logits.device)[None, :] < steps[:, None]
        return logits, labels, mask

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        per_step = F.binary_cross_entropy_with_logits(logits, labels, pos_weight=self.pos_weight, reduction="none")
        return (per_step * mask).sum() / mask.sum().clamp(min=1)

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        logits, labels, mask = self._logits_and_mask(batch, augment=True)
        loss = self._loss(logits, labels, mask)
        bsz = int(batch["audio"].shape[0])
        self.samples_seen += bsz
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=bsz)
        return loss

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        logits, labels, mask = self._logits_and_mask(batch, augment=False)
        loss = self._loss(logits, labels, mask)
        bsz = int(batch["audio"].shape[0])
        probs, target = torch.sigmoid(logits[mask]), labels[mask].long()
        self.val_acc.update(probs, target)
        self.val_f1.update(probs, target)
        self.log("val/loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=bsz)
        self.log("val/frame_acc", self.val_acc, on_step=False, on_epoch=True, batch_size=bsz)
        self.log("val/frame_f1", self.val_f1, on_step=False, on_epoch=True, batch_size=bsz)
        return loss

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        opt = torch.optim.Adam(self.net.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.scheduler == "cosine":
            epochs = self.trainer.max_epochs if self.trainer is not None else None
            if not epochs or epochs < 1:
                return opt  # no known horizon: constant learning rate
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
        if hp.scheduler == "onecycle":
            total = self.trainer.estimated_stepping_batches
            if not isinstance(total, int) and (total is None or total == float("inf")):
                raise ConfigError("model.optim.scheduler=onecycle needs a finite number of training steps "
                                  "(set trainer.max_steps or give the loader a length)")
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=hp.lr, total_steps=int(total))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        return opt
