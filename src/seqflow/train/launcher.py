"""Driver side of training: start (or join) Ray, run ``TorchTrainer``, return the checkpoint.

Embedded default: a local Ray started here with 2 CPU workers (gloo). At scale:
``ray.address=auto`` (or ``RAY_ADDRESS``) joins an existing cluster, ``ray.use_gpu=true`` uses NCCL.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("seqflow.train")


@dataclass
class TrainResult:
    """What a training run produced: the best Lightning checkpoint file by ``model.monitor``
    (``best_metrics``: what was reported with it) and rank-0's last reported metrics."""

    checkpoint_file: Path
    metrics: dict
    storage_path: str
    best_metrics: dict


def init_ray(cfg: DictConfig) -> None:
    """Connect to ``cfg.ray.address`` (or ``RAY_ADDRESS``), else start a local Ray instance."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    # Ray's own loggers at ERROR in every Ray process (the Train V2 placement-group cleaner warns
    # every second when the dashboard's state API is off); seqflow's loggers stay at INFO.
    kwargs = dict(include_dashboard=False, log_to_driver=True, configure_logging=True,
                  logging_level=logging.WARNING, logging_config=ray.LoggingConfig(log_level="ERROR"))
    if address:
        log.info("joining Ray cluster at %s", address)
        ray.init(address=address, **kwargs)
    else:
        # "local": always a fresh instance, never a stale cluster left on this machine
        ray.init(address="local", num_cpus=cfg.ray.num_cpus, **kwargs)


def select_best(checkpoints: list, monitor: str, mode: str):
    """``(checkpoint, metrics)`` with the best ``metrics[monitor]`` (lowest for ``mode="min"``,
    highest for ``"max"``; the later one on ties), or None when none reported ``monitor``."""
    scored = [(i, c, m) for i, (c, m) in enumerate(checkpoints) if monitor in m]
    if not scored:
        return None
    sign = 1.0 if mode == "min" else -1.0
    _, ckpt, metrics = min(scored, key=lambda t: (sign * float(t[2][monitor]), -t[0]))
    return ckpt, dict(metrics)


def train_with_ray(cfg: DictConfig, run_id: str, experiment_name: str, train_index: Path,
                   val_index: Path, run_name: str, tokenizer_dir: str | None = None) -> TrainResult:
    """Fit the configured model with Lightning DDP on ``cfg.ray.num_workers`` Ray Train workers.

    Checkpoints go to ``cfg.ray.storage_path/<run_name>``; re-running with the same ``run_name``
    resumes. A failed worker group restarts up to ``cfg.ray.max_failures`` times from the last
    checkpoint.

    Raises:
        ray.train.TrainingFailedError: training failed more than ``max_failures`` times.
    """
    warnings.filterwarnings("ignore", message=".*litlogger.*")
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from seqflow.shards.reader import check_shards_for_ranks
    from seqflow.train.worker import train_loop_per_worker

    world = int(cfg.ray.num_workers)
    monitor, mode = str(cfg.model.monitor), str(cfg.model.monitor_mode)
    check_shards_for_ranks(str(train_index), world, int(cfg.trainer.num_workers))
    check_shards_for_ranks(str(val_index), world, int(cfg.trainer.num_workers))
    init_ray(cfg)
    resources = {"CPU": float(cfg.ray.cpus_per_worker)}
    if cfg.ray.use_gpu:
        resources["GPU"] = 1.0
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"cfg": OmegaConf.to_container(cfg, resolve=True), "run_id": run_id,
                           "experiment_name": experiment_name,
                           "train_index": str(train_index), "val_index": str(val_index),
                           "tokenizer_dir": tokenizer_dir},
        scaling_config=ScalingConfig(num_workers=world, use_gpu=bool(cfg.ray.use_gpu),
                                     resources_per_worker=resources),
        run_config=RunConfig(name=run_name, storage_path=str(cfg.ray.storage_path),
                             failure_config=FailureConfig(max_failures=int(cfg.ray.max_failures)),
                             checkpoint_config=CheckpointConfig(
                                 num_to_keep=2, checkpoint_score_attribute=monitor,
                                 checkpoint_score_order=mode)),
    )
    log.info("training %s on %d Ray worker(s), use_gpu=%s", cfg.model.name, world, cfg.ray.use_gpu)
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"training run {run_name} reported no checkpoint (see {cfg.ray.storage_path})")
    best = select_best(result.best_checkpoints or [], monitor, mode) or (result.checkpoint, dict(result.metrics or {}))
    best, best_metrics = best
    log.info("best checkpoint by %s (%s): epoch %s, %s = %s", monitor, mode, best_metrics.get("epoch"), monitor,
             best_metrics.get(monitor))
    return TrainResult(checkpoint_file=Path(best.path) / "checkpoint.ckpt", metrics=dict(result.metrics or {}),
                       storage_path=str(cfg.ray.storage_path), best_metrics=best_metrics)
