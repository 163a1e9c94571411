"""Training logic of the speech recognizers: features on the device, CTC or joint CTC/attention loss,
Noam warm-up, WER/CER each validation epoch.

The architectures are plain ``nn.Module``\\ s passed in as ``net``
(:class:`seqflow.models.ctc.CTCModel`, :class:`seqflow.models.asr_transformer.TransformerASR`);
these modules know nothing of Ray or MLflow.

Batches are the ASR loader's dicts: ``audio (B, S)`` float32 zero-padded at 16 kHz,
``audio_lengths (B,)``, ``tokens (B, U)`` int64 padded with the blank id 0 (no sos/eos),
``token_lengths (B,)``, ``texts`` (normalised transcripts, the WER/CER references), ``keys``.

Logged: ``train/loss`` (per step, this rank; the transformer also ``train/ctc_loss`` and
``train/att_loss``), ``train/lr``; per epoch, synchronised over ranks: ``val/loss``, ``val/wer`` and
``val/cer`` (greedy decoding; torchmetrics sums edit counts over ranks before dividing); with on-the-fly
waveform augmentation (:mod:`seqflow.shards.utterance_augment`, batches carrying ``augment_counts``),
per epoch the counts summed over ranks: ``augment/applied_<t>``, ``augment/skipped_<t>`` (NaN/silent
output, left out), ``augment/speed_infeasible`` (speed change undone: too short for CTC), and one log line.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn
from torchmetrics.text import CharErrorRate, WordErrorRate

from seqflow.audio.features import SpecAugment
from seqflow.audio.frontend import SpeechFrontend
from seqflow.errors import ConfigError
from seqflow.models.asr_transformer import add_sos_eos
from seqflow.models.decoding import attention_greedy_decode, ctc_greedy_decode
from seqflow.models.losses import ctc_loss, joint_ctc_attention_loss
from seqflow.models.schedules import noam_scheduler
from seqflow.text.tokenizers import Tokenizer

log = logging.getLogger(__name__)
SCHEDULERS = ("noam", "none")


class ASRModule(pl.LightningModule):
    """Shared parts of :class:`CTCModule` and :class:`TransformerASRModule`.

    Args:
        net: the architecture. tokenizer: its :class:`~seqflow.text.tokenizers.Tokenizer` (ids → text
            for WER/CER; ``vocab_size`` must equal the net's).
        features: front-end settings (``cfg.model.features``, see :class:`SpeechFrontend`).
        spec_augment: SpecAugment settings (``cfg.model.spec_augment``), ``None`` for none.
        lr: peak learning rate (reached after ``warmup_steps`` optimizer steps).
        weight_decay: AdamW decoupled weight decay. warmup_steps: Noam warm-up length.
        scheduler: ``noam`` (linear warm-up, then ∝ 1/√step; Vaswani et al. 2017 §5.3) or ``none``.

    Attributes:
        samples_seen: training utterances seen by this rank (for the launcher's throughput metric).
        nonfinite_batches: training batches whose loss was inf/NaN and replaced by a zero loss.
        augment_counts: this epoch's waveform augmentation counts on this rank (``{name: int}``).
    """

    def __init__(self, net: nn.Module, tokenizer: Tokenizer, features: Mapping[str, Any],
                 spec_augment: Mapping[str, Any] | None = None, lr: float = 1e-3, weight_decay: float = 0.0,
                 warmup_steps: int = 200, scheduler: str = "noam") -> None:
        super().__init__()
        if scheduler not in SCHEDULERS:
            raise ConfigError(f"model.optim.scheduler: {scheduler!r} is not one of {SCHEDULERS}")
        if int(tokenizer.vocab_size) != int(net.vocab_size):
            raise ConfigError(f"tokenizer has {tokenizer.vocab_size} tokens but the net outputs {net.vocab_size}")
        self.save_hyperparameters(ignore=["net", "tokenizer"])
        self.net, self.tokenizer = net, tokenizer
        self.frontend = SpeechFrontend.from_config(features)
        if self.frontend.n_mels != net.n_mels:
            raise ConfigError(f"model.features.n_mels={self.frontend.n_mels} but the net takes {net.n_mels} mel bins")
        self.spec_augment = SpecAugment(**dict(spec_augment)) if spec_augment else nn.Identity()
        self.samples_seen = 0
        self.nonfinite_batches = 0
        self.augment_counts: Counter = Counter()
        self.val_wer, self.val_cer = WordErrorRate(), CharErrorRate()

    def _features(self, batch: Mapping[str, Any], augment: bool) -> tuple[torch.Tensor, torch.Tensor]:
        feats, frame_lengths = self.frontend(batch["audio"], batch["audio_lengths"])
        return (self.spec_augment(feats) if augment else feats), frame_lengths

    def _guard(self, loss: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
        """``loss`` if finite, else a zero loss over every parameter (so DDP still all-reduces and no
        rank waits) and a warning naming the batch's first keys."""
        if bool(torch.isfinite(loss)):
            return loss
        self.nonfinite_batches += 1
        log.warning("non-finite loss %s on batch %s...; step skipped (zero gradients), %d so far",
                    float(loss), list(batch.get("keys", []))[:3], self.nonfinite_batches)
        return sum(p.sum() for p in self.net.parameters()) * 0.0

    def _hypotheses(self, batch: Mapping[str, Any], feats: torch.Tensor, frame_lengths: torch.Tensor,
                    outputs: Any) -> list[list[int]]:
        raise NotImplementedError

    def _step(self, batch: Mapping[str, Any], augment: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor], Any]:
        raise NotImplementedError

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        loss, parts, _ = self._step(batch, augment=True)
        loss = self._guard(loss, batch)
        bsz = int(batch["audio"].shape[0])
        self.samples_seen += bsz
        self.augment_counts.update(batch.get("augment_counts") or {})
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=bsz)
        for name, value in parts.items():
            self.log(f"train/{name}_loss", value, on_step=True, on_epoch=False, batch_size=bsz)
        if self._trainer is not None and self._trainer.optimizers:
            self.log("train/lr", self._trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False,
                     batch_size=bsz)
        return loss

    def on_train_epoch_start(self) -> None:
        self.augment_counts = Counter()

    def on_train_epoch_end(self) -> None:
        """Sum the epoch's augmentation counts over ranks (a collective every rank runs, augmented or
        not) and, from rank 0 when any is non-zero, log them as ``augment/*`` metrics and one line."""
        from seqflow.shards.utterance_augment import COUNT_NAMES

        counts = torch.tensor([float(self.augment_counts.get(n, 0)) for n in COUNT_NAMES], device=self.device)
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1:
            counts = trainer.strategy.reduce(counts, reduce_op="sum")
        total = {n: int(v) for n, v in zip(COUNT_NAMES, counts.tolist()) if v}
        if not total or trainer is None or trainer.global_rank != 0:
            return
        log.info("epoch %d waveform augmentation (all ranks): %s", trainer.current_epoch + 1, total)
        for lg in trainer.loggers:
            lg.log_metrics({f"augment/{n}": float(v) for n, v in total.items()}, step=trainer.global_step)

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        loss, _, (feats, frame_lengths, outputs) = self._step(batch, augment=False)
        bsz = int(batch["audio"].shape[0])
        hyps = [self.tokenizer.decode(ids) for ids in self._hypotheses(batch, feats, frame_lengths, outputs)]
        refs = [" ".join(t.split()) for t in batch["texts"]]
        self.val_wer.update(hyps, refs)
        self.val_cer.update(hyps, refs)
        self.log("val/loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=bsz)
        self.log("val/wer", self.val_wer, on_step=False, on_epoch=True, prog_bar=True, batch_size=bsz)
        self.log("val/cer", self.val_cer, on_step=False, on_epoch=True, prog_bar=True, batch_size=bsz)
        return loss

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        opt = torch.optim.AdamW(self.net.parameters(), lr=float(hp.lr), betas=(0.9, 0.98), eps=1e-9,
                                weight_decay=float(hp.weight_decay))
        if hp.scheduler == "none":
            return opt
        warmup = int(hp.warmup_steps)
        # noam_lr(step, 1, warmup, factor) peaks at factor / sqrt(warmup) = lr, at step = warmup
        sched = noam_scheduler(opt, d_model=1, warmup_steps=warmup, factor=float(hp.lr) * warmup ** 0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class CTCModule(ASRModule):
    """CTC training (Graves et al. 2006) of a :class:`~seqflow.models.ctc.CTCModel`: loss with
    ``zero_infinity=True`` (an utterance too short for its transcript adds 0, never inf), greedy
    best-path decoding for validation WER/CER. Arguments: see :class:`ASRModule`."""

    def forward(self, audio: torch.Tensor, audio_lengths: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Waveform ``(B, S)`` → ``(log_probs (B, T', V), out_lengths (B,))`` (no augmentation)."""
        feats, frame_lengths = self.frontend(audio, audio_lengths)
        return self.net(feats, frame_lengths)

    def _step(self, batch, augment):
        feats, frame_lengths = self._features(batch, augment)
        log_probs, out_lengths = self.net(feats, frame_lengths)
        loss = ctc_loss(log_probs, out_lengths, batch["tokens"], batch["token_lengths"], blank=self.tokenizer.blank_id)
        return loss, {}, (feats, frame_lengths, (log_probs, out_lengths))

    def _hypotheses(self, batch, feats, frame_lengths, outputs):
        log_probs, out_lengths = outputs
        return ctc_greedy_decode(log_probs, out_lengths, blank=self.tokenizer.blank_id)


class TransformerASRModule(ASRModule):
    """Joint CTC/attention training (Watanabe et al. 2017) of a
    :class:`~seqflow.models.asr_transformer.TransformerASR`: teacher forcing with ``[sos, y…]`` →
    ``[y…, eos]``, label-smoothed cross-entropy, ``L = λ L_ctc + (1 - λ) L_att`` with λ = the net's
    ``ctc_weight``; greedy attention decoding (batched) for validation WER/CER.

    Args:
        label_smoothing: ε of the label-smoothed cross-entropy. Others: see :class:`ASRModule`.
    """

    def __init__(self, net: nn.Module, tokenizer: Tokenizer, features: Mapping[str, Any],
                 spec_augment: Mapping[str, Any] | None = None, lr: float = 1e-3, weight_decay: float = 0.0,
                 warmup_steps: int = 200, scheduler: str = "noam", label_smoothing: float = 0.1) -> None:
        super().__init__(net, tokenizer, features, spec_augment, lr, weight_decay, warmup_steps, scheduler)
        self.label_smoothing = float(label_smoothing)

    def _step(self, batch, augment):
        tok = self.tokenizer
        feats, frame_lengths = self._features(batch, augment)
        tokens, token_lengths = batch["tokens"], batch["token_lengths"]
        tokens_in, tokens_out, in_lengths = add_sos_eos(tokens, token_lengths, tok.sos_id, tok.eos_id, pad=tok.blank_id)
        att_logits, ctc_lp, out_lengths = self.net(feats, frame_lengths, tokens_in, in_lengths)
        loss, parts = joint_ctc_attention_loss(att_logits, tokens_out, ctc_lp, out_lengths, tokens, token_lengths,
                                               ctc_weight=float(self.net.ctc_weight), smoothing=self.label_smoothing,
                                               blank=tok.blank_id)
        return loss, parts, (feats, frame_lengths, None)

    def _hypotheses(self, batch, feats, frame_lengths, outputs):
        tok = self.tokenizer
        return attention_greedy_decode(self.net, feats, frame_lengths, tok.sos_id, tok.eos_id, blank=tok.blank_id)
