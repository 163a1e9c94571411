"""The per-worker training function Ray Train runs on every rank (Lightning + RayDDPStrategy).

Each rank builds the model, reads its disjoint part of the train shards (equal batch count on
every rank), and fits with ``RayDDPStrategy``; Lightning's ``MLFlowLogger`` is attached to the
driver's MLflow run and only logs from rank 0.
"""

from __future__ import annotations

import logging
import os
import time

import lightning.pytorch as pl
import torch
from omegaconf import OmegaConf

log = logging.getLogger("seqflow.train")


class RankThroughput(pl.Callback):
    """Counts samples per rank; at train end all-gathers the counts (a collective on every rank,
    never inside a rank-0-only branch, see ray#56997) and logs them from rank 0."""

    def __init__(self) -> None:
        self.samples = 0
        self.t0 = 0.0
        self.seconds = 0.0

    def on_train_start(self, trainer, pl_module) -> None:
        self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.samples += int(batch["audio"].shape[0])

    def on_train_end(self, trainer, pl_module) -> None:
        self.seconds = time.perf_counter() - self.t0
        counts = trainer.strategy.all_gather(torch.tensor([self.samples], dtype=torch.long))
        counts = counts.flatten().tolist()
        log.info("rank %d/%d trained on %d samples in %.1f s", trainer.global_rank, trainer.world_size,
                 self.samples, self.seconds)
        if trainer.global_rank == 0:
            total = sum(counts)
            metrics = {f"train/samples_rank{r}": float(c) for r, c in enumerate(counts)}
            metrics["throughput/samples_per_s"] = total / max(self.seconds, 1e-9)
            metrics["train/seconds"] = self.seconds
            for lg in trainer.loggers:
                lg.log_metrics(metrics, step=trainer.global_step)
            self.summary = {"per_rank_samples": counts, **metrics}


class ProgressLog(pl.Callback):
    """Rank 0 logs progress as plain lines (Ray forwards worker output line by line, so a
    carriage-return progress bar would not show): every ``every`` steps and at each epoch end."""

    def __init__(self, every: int = 25) -> None:
        self.every, self.t0, self.samples = every, 0.0, 0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.t0, self.samples = time.perf_counter(), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.samples += int(batch["audio"].shape[0])
        if trainer.global_rank == 0 and (batch_idx + 1) % self.every == 0:
            log.info("epoch %d/%d  step %d/%d  train/loss %.4f  %.1f samples/s (rank 0)",
                     trainer.current_epoch + 1, trainer.max_epochs, batch_idx + 1, trainer.num_training_batches,
                     float(outputs["loss"]), self.samples / (time.perf_counter() - self.t0))

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        m = trainer.callback_metrics
        if trainer.global_rank == 0 and not trainer.sanity_checking and "val/loss" in m:
            extra = "  ".join(f"{k} {float(v):.4f}" for k, v in sorted(m.items()) if k.startswith("val/"))
            log.info("epoch %d/%d done  %s", trainer.current_epoch + 1, trainer.max_epochs, extra)


def quiet_worker_logs() -> None:
    """Drop per-report checkpoint chatter and known-harmless deprecation warnings on workers."""
    import warnings

    for name in ("ray.train", "ray.train.v2"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("seqflow").setLevel(logging.INFO)
    for pattern in (".*LeafSpec.*", ".*IterableDataset.*__len__.*", ".*all_gather is deprecated.*",
                    ".*litlogger.*", ".*does not have many workers.*"):
        warnings.filterwarnings("ignore", message=pattern)


def train_loop_per_worker(config: dict) -> None:
    """Ray Train entry point (runs on each worker). ``config``: ``cfg`` (plain dict of the
    seqflow config), ``run_id`` (MLflow run to log to), ``train_index``/``val_index`` (paths)."""
    import ray.train
    from lightning.pytorch.loggers import MLFlowLogger
    from ray.train.lightning import (RayDDPStrategy, RayLightningEnvironment,
                                     RayTrainReportCallback, prepare_trainer)

    from seqflow.lit.factory import build_module
    from seqflow.shards.reader import make_dataloader

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_worker_logs()
    cfg = OmegaConf.create(config["cfg"])
    torch.set_num_threads(int(cfg.trainer.torch_threads))
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    pl.seed_everything(int(cfg.seed) + rank, workers=True, verbose=False)

    tokenizer_dir = config.get("tokenizer_dir")
    module = build_module(cfg, tokenizer_dir=tokenizer_dir)
    bs, nw = int(cfg.model.batch_size), int(cfg.trainer.num_workers)
    extra = {}
    if tokenizer_dir:  # speech recognition: dynamic batches by seconds of audio, bucketed by duration
        b = cfg.batching
        extra = dict(batch_seconds=float(b.batch_seconds), num_buckets=int(b.num_buckets),
                     batch_margin=float(b.margin), shuffle_buffer=int(b.shuffle_buffer), tokenizer_dir=tokenizer_dir)
    train_extra = dict(extra)
    if tokenizer_dir:  # on-the-fly waveform augmentation of train utterances (augment.utterances), never val
        from seqflow.shards.utterance_augment import UtteranceAugment
        train_extra["augment"] = UtteranceAugment.from_config(cfg)
    train_dl = make_dataloader(config["train_index"], bs, rank, world, nw, shuffle=True, seed=int(cfg.seed),
                               **train_extra)
    val_dl = make_dataloader(config["val_index"], bs, rank, world, nw, shuffle=False, seed=int(cfg.seed), **extra)

    logger = MLFlowLogger(tracking_uri=cfg.tracking.tracking_uri, run_id=config["run_id"],
                          experiment_name=config["experiment_name"], log_model=False)
    throughput = RankThroughput()
    trainer = pl.Trainer(
        accelerator=cfg.trainer.accelerator, devices="auto", strategy=RayDDPStrategy(),
        plugins=[RayLightningEnvironment()], callbacks=[RayTrainReportCallback(), throughput, ProgressLog()],
        max_epochs=int(cfg.trainer.max_epochs), precision=cfg.trainer.precision,
        gradient_clip_val=float(cfg.trainer.gradient_clip_val),
        log_every_n_steps=int(cfg.trainer.log_every_n_steps), logger=logger,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=(rank == 0),
        num_sanity_val_steps=0,
    )
    trainer = prepare_trainer(trainer)
    ckpt_path = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:  # restarted after a worker failure: resume from the last report
        with checkpoint.as_directory() as d:
            ckpt_path = os.path.join(d, RayTrainReportCallback.CHECKPOINT_NAME)
            log.info("rank %d resuming from %s", rank, ckpt_path)
            trainer.fit(module, train_dl, val_dl, ckpt_path=ckpt_path)
    else:
        trainer.fit(module, train_dl, val_dl)
