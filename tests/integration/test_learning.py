"""Learning: on real TTS audio, the trigger-word model's training loss falls and the trained
model detects the trigger word in held-out clips (test voices, never heard in training) and
stays quiet on held-out clips without it.

Single-process Lightning (the Ray Train path is covered by ``test_pipeline.py``); real corpus,
real shards, real loader, real detector.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from seqflow import stages
from seqflow.config import load_config
from seqflow.lit.factory import build_module
from seqflow.lit.trigger_word import build_logmel
from seqflow.serve.detector import TriggerWordDetector
from seqflow.shards.reader import iter_samples, make_dataloader

pytestmark = pytest.mark.slow

OVERRIDES = [
    "model=trigger_word",  # the course's log-mel model (the default is the speech-embedding one)
    "data.num_voices=16", "data.renders_per_voice=8", "data.negatives_per_voice=16",
    # plain negative words here: robustness to sound-alikes is measured by the pipeline's FRR/FA-h
    "data.num_negatives=30", "data.num_confusables=0",
    "data.hard_negatives={partials: 0, phoneme_edits: 0, rhymes: 0}", "clips.hard_negative_fraction=0.0",
    "data.num_sentences=0", "data.background_seconds=20.0",
    "data.backgrounds_per_kind={train: 2, val: 1, test: 1}",
    "clips.duration=5.0", "clips.train_clips=480", "clips.val_clips=16", "clips.test_clips=60",
    "shards.min_shards=2", "model.batch_size=16",
    # the course setup on espeak voices: no Piper, no room/channel augmentation, no festival download
    "data.tts_engines=[espeak]", "augment.enabled=false", "evaluate.heldout_engine.enabled=false",
]


class LossHistory(pl.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def test_loss_falls_and_model_detects_trigger_word(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SEQFLOW_WORKDIR", str(tmp_path))
    cfg = load_config(OVERRIDES)
    stages.prepare(cfg)
    stages.validate(cfg)
    shards = stages.shard(cfg, data_md5="learning")

    torch.manual_seed(0)
    torch.set_num_threads(2)
    module = build_module(cfg)
    loader = make_dataloader(shards["index"]["train"], 16, rank=0, world_size=1, num_workers=0,
                             shuffle=True, seed=0)
    history = LossHistory()
    trainer = pl.Trainer(accelerator="cpu", max_epochs=6, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[history],
                         gradient_clip_val=5.0)
    trainer.fit(module, loader)

    first, last = np.mean(history.losses[:5]), np.mean(history.losses[-5:])
    assert last < 0.6 * first, f"training loss did not fall enough: {first:.3f} -> {last:.3f}"

    detector = TriggerWordDetector(module.net.eval(), build_logmel(cfg.model.features), threshold=0.5,
                                   refractory_s=float(cfg.evaluate.refractory_s))
    window = float(cfg.clips.label_seconds) + cfg.evaluate.match_tolerance_s
    hits = positives = quiet_clips = negative_clips = 0
    for _key, wav, meta in iter_samples(shards["index"]["test"]):
        ends = [s["end"] for s in meta["segments"] if s["kind"] == "positive"]
        dets = detector.detect(wav)
        if ends:
            positives += len(ends)
            hits += sum(any(e - cfg.evaluate.match_tolerance_s <= d["start"] <= e + window for d in dets)
                        for e in ends)
        else:
            negative_clips += 1
            quiet_clips += not dets
    assert positives > 10 and negative_clips > 3
    assert hits / positives >= 0.6, f"detected only {hits}/{positives} held-out trigger words"
    assert quiet_clips / negative_clips >= 0.7, f"fired on {negative_clips - quiet_clips}/{negative_clips} clips without the trigger word"
