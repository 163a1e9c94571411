"""Stop a Ray Train run from outside the thread that waits on it (the train stage's timeout hook).

``trainer.fit()`` waits in ``ray.get`` on the Ray Train controller actor, which owns the worker
actors. Killing the controller's process makes that ``ray.get`` raise at once, and Ray kills the
actors it owned (its workers) with it; the workers are killed here as well, so a rank blocked in
a collective or in C code never trains on. Only processes that descend from this one are touched:
the Ray Train run of this driver on a local Ray (the embedded default, started by the train
stage or by the caller). A controller on a joined cluster runs under that node's raylet, not
under this process: it stops when this driver disconnects or exits (Ray ends a job's actors
with it), which the stage timeout's hard end guarantees (:mod:`seqflow.stage_timeout`).
"""

from __future__ import annotations

import contextlib
import logging

log = logging.getLogger("seqflow.train")

# Ray names an actor's process after its class (setproctitle): ray::<Class>.<method> or ray::<Class>
CONTROLLER_TITLE = "ray::TrainController"
WORKER_TITLE = "ray::RayTrainWorker"


def _title(p) -> str:
    import psutil

    try:
        return " ".join(p.cmdline())
    except psutil.Error:
        return ""


def ray_train_processes() -> list:
    """The Ray Train controller and worker processes that descend from this process (psutil)."""
    import psutil

    return [p for p in psutil.Process().children(recursive=True)
            if _title(p).startswith((CONTROLLER_TITLE, WORKER_TITLE))]


def abort_ray_train(wait_s: float = 5.0) -> str | None:
    """SIGKILL this driver's local Ray Train controller and workers (:func:`ray_train_processes`)
    and wait up to ``wait_s`` for them to go. Returns a short description for the timeout
    message (None when there was no Ray Train run here)."""
    import psutil

    procs = ray_train_processes()
    if not procs:
        return None
    controllers = sum(_title(p).startswith(CONTROLLER_TITLE) for p in procs)
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.kill()
    _, alive = psutil.wait_procs(procs, timeout=wait_s)
    log.warning("Ray Train run aborted: killed %d controller and %d worker process(es)%s", controllers,
                len(procs) - controllers, f"; {len(alive)} still alive" if alive else "")
    workers = len(procs) - controllers
    return (f"Ray Train run aborted: {workers} worker process(es) killed" if workers
            else "Ray Train run aborted before its workers started")
