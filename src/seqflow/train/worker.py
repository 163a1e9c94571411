"""The per-worker training function Ray Train runs on every rank (Lightning + RayDDPStrategy).

Each rank builds the model, reads its disjoint part of the train shards (equal batch count on
every rank), and fits with ``RayDDPStrategy``; Lightning's ``MLFlowLogger`` (params redacted:
:func:`seqflow.tracking.redacting_client.mlflow_logger`) is attached to the driver's MLflow run
(``cfg.tracking.tracking_uri``, a server when it is ``http(s)://``) and only logs from rank 0.
System metrics (``system/*``: CPU, memory, disk, network, GPU when present) are
sampled on the training machines themselves, by local rank 0 of each node (:class:`SystemMetrics`):
the driver that holds the run may sit on another machine (a laptop, the Ray head) that does no
training. On a multi-node cluster each node's metrics are ``system/node<k>/*``. Samples lost to
damaged shards are counted over all ranks and logged every epoch (``data/lost_samples_train``,
``data/lost_samples_val``; :class:`LostSamples`).
"""

from __future__ import annotations

import logging
import os
import threading
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


class LostSamples(pl.Callback):
    """Counts the samples lost to damaged shards (the loader's ``lost_samples``, see
    :class:`seqflow.shards.reader.ShardBatches`) on every rank; at each train epoch end (after that
    epoch's validation) all-gathers the counts (a collective on every rank) and rank 0 logs the
    totals of this fit so far as ``data/lost_samples_train`` and ``data/lost_samples_val`` (samples;
    every pass over a damaged shard counts again), with a warning while they are not 0."""

    def __init__(self) -> None:
        self.lost = {"train": 0, "val": 0}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.lost["train"] += int(batch.get("lost_samples", 0))

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not trainer.sanity_checking:
            self.lost["val"] += int(batch.get("lost_samples", 0))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        local = torch.tensor([self.lost["train"], self.lost["val"]], dtype=torch.long)
        totals = trainer.strategy.all_gather(local).reshape(-1, 2).sum(0).tolist()
        if trainer.global_rank == 0:
            metrics = {"data/lost_samples_train": float(totals[0]), "data/lost_samples_val": float(totals[1])}
            for lg in trainer.loggers:
                lg.log_metrics(metrics, step=trainer.global_step)
            if any(totals):
                log.warning("%d train / %d val sample(s) lost to damaged shards so far (see the shard warnings)",
                            *totals)


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


class SystemMetrics(pl.Callback):
    """Log this machine's system metrics (MLflow's collectors: ``system/cpu_utilization_percentage``,
    ``system/system_memory_usage_megabytes``, disk, network, ``system/gpu_*`` when a GPU is seen) to
    run ``run_id`` every ``interval_s`` seconds while fitting, plus one sample when fitting ends (so
    even a fit shorter than ``interval_s`` leaves a point). ``node_id`` (multi-node) makes the keys
    ``system/<node_id>/*``. The sampling thread never raises into training: a failed upload is
    logged as a warning and sampling stops."""

    def __init__(self, run_id: str, tracking_uri: str, interval_s: float = 10.0, node_id: str | None = None) -> None:
        self.run_id, self.tracking_uri, self.node_id = run_id, tracking_uri, node_id
        self.interval_s = float(interval_s)
        self.monitor = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.samples = 0

    def _sample(self) -> None:
        m = self.monitor
        m.collect_metrics()
        m.publish_metrics(m.aggregate_metrics())
        self.samples += 1

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self._sample()
            except Exception as e:  # noqa: BLE001 - metrics must never stop training
                log.warning("system metrics: sampling stopped: %s", e)
                return

    def on_fit_start(self, trainer, pl_module) -> None:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        self.monitor = SystemMetricsMonitor(self.run_id, sampling_interval=self.interval_s, node_id=self.node_id,
                                            tracking_uri=self.tracking_uri)
        self.monitor.collect_metrics()  # prime the CPU counters (psutil's first reading is meaningless)
        for m in self.monitor.monitors:
            m.clear_metrics()
        self._thread = threading.Thread(target=self._loop, name="seqflow-system-metrics", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling, take the last sample and flush everything to MLflow (idempotent)."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        try:
            self._sample()
            self.monitor.mlflow_logger.flush()
        except Exception as e:  # noqa: BLE001
            log.warning("system metrics: last sample not logged: %s", e)
        log.info("system metrics: %d sample(s) logged to run %s%s", self.samples, self.run_id,
                 f" as node {self.node_id}" if self.node_id else "")

    def on_fit_end(self, trainer, pl_module) -> None:
        self.stop()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.stop()


def system_metrics_callback(cfg, run_id: str, local_rank: int, node_rank: int,
                            multi_node: bool) -> SystemMetrics | None:
    """A :class:`SystemMetrics` for local rank 0 of each node when ``tracking.system_metrics.enabled``
    (absent: on, every 10 s); None elsewhere. ``node_id`` is ``node<node_rank>`` on a multi-node run."""
    sm = cfg.tracking.get("system_metrics") or {}
    if local_rank != 0 or not bool(sm.get("enabled", True)):
        return None
    return SystemMetrics(run_id, str(cfg.tracking.tracking_uri), float(sm.get("interval_s", 10.0)),
                         f"node{node_rank}" if multi_node else None)


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
    from ray.train.lightning import (RayDDPStrategy, RayLightningEnvironment,
                                     RayTrainReportCallback, prepare_trainer)

    from seqflow.lit.factory import build_module
    from seqflow.shards.reader import make_dataloader
    from seqflow.tracking.redacting_client import mlflow_logger

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

    logger = mlflow_logger(cfg.tracking.tracking_uri, config["run_id"], config["experiment_name"],
                           log_model=False)   # params redacted (credentials never reach MLflow)
    throughput = RankThroughput()
    callbacks = [RayTrainReportCallback(), throughput, LostSamples(), ProgressLog()]
    sysm = system_metrics_callback(cfg, config["run_id"], ctx.get_local_rank(), ctx.get_node_rank(),
                                   ctx.get_local_world_size() < world)
    if sysm is not None:
        callbacks.append(sysm)
    trainer = pl.Trainer(
        accelerator=cfg.trainer.accelerator, devices="auto", strategy=RayDDPStrategy(),
        plugins=[RayLightningEnvironment()], callbacks=callbacks,
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
