"""Bounded wait for the Ray Train worker group: at most ``ray.worker_group_timeout_s`` seconds for
its resources, then one error naming what was missing (never an endless wait).

Ray Train V2 waits ``RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S`` (default 60 s) for the worker
group's placement group, then raises ``WorkerGroupStartupTimeoutError`` on its controller, and
retries that forever (``FailureConfig.controller_failure_limit=-1``). :func:`bounded_group_wait`
sets the timeout from the config (the variable is one of those Ray Train propagates from the
driver to its controller), :func:`failure_limits` makes the first startup timeout final, and the
resulting ``ControllerError`` is turned into :class:`WorkerGroupTimeoutError`.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

from omegaconf import DictConfig

from seqflow.errors import SeqflowError

TIMEOUT_ENV = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"


class WorkerGroupTimeoutError(SeqflowError, TimeoutError):
    """The Ray cluster did not provide the worker group's resources in ``ray.worker_group_timeout_s``."""


def group_timeout_s(cfg: DictConfig) -> float | None:
    """``ray.worker_group_timeout_s`` as seconds, None when unset (Ray's default, retried forever)."""
    value = cfg.ray.get("worker_group_timeout_s")
    return None if value is None else float(value)


def failure_limits(cfg: DictConfig) -> dict:
    """Extra ``FailureConfig`` arguments: with a timeout, a controller failure (a worker group
    that could not start) is not retried."""
    return {} if group_timeout_s(cfg) is None else {"controller_failure_limit": 0}


def describe_shortfall(cfg: DictConfig) -> str:
    """What the worker group asks for against the cluster's total and free resources, e.g.
    ``"8 worker(s) x 1 CPU need 8 CPU; the cluster has 2 CPU / 0 GPU, 2 CPU / 0 GPU free: missing 6 CPU"``."""
    import ray

    world, per = int(cfg.ray.num_workers), float(cfg.ray.cpus_per_worker)
    need = {"CPU": world * per, "GPU": float(world) if cfg.ray.use_gpu else 0.0}
    total, free = ray.cluster_resources(), ray.available_resources()
    missing = [f"{need[r] - total.get(r, 0):g} {r}" for r in need if need[r] > total.get(r, 0)]
    ask = f"{world} worker(s) x {per:g} CPU" + (" + 1 GPU" if cfg.ray.use_gpu else "")
    return (f"{ask} need {need['CPU']:g} CPU / {need['GPU']:g} GPU; the cluster has {total.get('CPU', 0):g} CPU / "
            f"{total.get('GPU', 0):g} GPU, {free.get('CPU', 0):g} CPU / {free.get('GPU', 0):g} GPU free"
            + (f": missing {', '.join(missing)}" if missing else " (taken by other jobs?)"))


@contextlib.contextmanager
def bounded_group_wait(cfg: DictConfig) -> Iterator[None]:
    """Around ``TorchTrainer(...)`` and ``fit()`` (Ray connected): set the worker-group start
    timeout from ``ray.worker_group_timeout_s`` and translate its expiry.

    Raises:
        WorkerGroupTimeoutError: one line naming the timeout and the missing resources.
    """
    timeout = group_timeout_s(cfg)
    if timeout is None:
        yield
        return
    from ray.train import ControllerError

    before = os.environ.get(TIMEOUT_ENV)
    os.environ[TIMEOUT_ENV] = f"{timeout:g}"
    try:
        yield
    except ControllerError as e:
        if type(e.controller_failure).__name__ != "WorkerGroupStartupTimeoutError":
            raise
        raise WorkerGroupTimeoutError(
            f"Ray Train could not start its worker group within ray.worker_group_timeout_s={timeout:g}: "
            f"{describe_shortfall(cfg)}; add nodes, lower ray.num_workers / ray.cpus_per_worker, or raise "
            "ray.worker_group_timeout_s (an autoscaler may need minutes)") from None
    finally:
        if before is None:
            os.environ.pop(TIMEOUT_ENV, None)
        else:
            os.environ[TIMEOUT_ENV] = before
