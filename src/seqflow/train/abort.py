"""Stop a Ray Train run from outside the thread that waits on it (the train stage's timeout hook).

``trainer.fit()`` waits in ``ray.get`` on the Ray Train controller actor, which owns the worker
actors. Killing the controller's process makes that ``ray.get`` raise at once, and Ray kills the
actors it owned (its workers) with it; the workers are killed here as well, so a rank blocked in
a collective or in C code never trains on. Only this driver's run is touched:

* on a local Ray (the embedded default), the controller and worker processes that descend from
  this process (:func:`ray_train_processes`);
* on a joined cluster, where they run under the nodes' raylets: this job's ``TrainController``
  and ``RayTrainWorker`` actors on this node, found in the cluster's actor table (GCS; no
  dashboard needed) by job id, node id and pid (:func:`joined_cluster_processes`). Ray Train
  places the controller on the driver's node, so it is always among them; workers on other nodes
  die with it (an actor's owner takes the actors it created down with it).
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


def joined_cluster_processes() -> list:
    """This Ray job's live Ray Train controller and worker processes on this node of a joined
    cluster (empty when Ray is not initialized or the actor table cannot be read). Read with
    ``ray._private.state.actors`` (the GCS actor table; Ray's public state API needs the
    dashboard, which seqflow turns off); each pid is checked against its process title."""
    import psutil
    import ray

    if not ray.is_initialized():
        return []
    try:
        from ray._private import state

        ctx = ray.get_runtime_context()
        job, node = ctx.get_job_id(), ctx.get_node_id()
        actors = state.actors().values()
    except Exception as e:  # noqa: BLE001 - a private API: the stage timeout's hard end remains
        log.warning("cannot read the Ray actor table to abort this job's Ray Train run: %s: %s", type(e).__name__, e)
        return []
    procs = []
    for a in actors:
        if (a.get("JobID") != job or a.get("State") != "ALIVE" or (a.get("Address") or {}).get("NodeID") != node
                or a.get("ActorClassName") not in ("TrainController", "RayTrainWorker") or not a.get("Pid")):
            continue
        with contextlib.suppress(psutil.Error):
            p = psutil.Process(int(a["Pid"]))
            if _title(p).startswith((CONTROLLER_TITLE, WORKER_TITLE)):
                procs.append(p)
    return procs


def abort_ray_train(wait_s: float = 5.0) -> str | None:
    """SIGKILL this driver's Ray Train controller and workers (:func:`ray_train_processes` on a
    local Ray, else :func:`joined_cluster_processes`) and wait up to ``wait_s`` for them to go.
    Returns a short description for the timeout message (None when there was no Ray Train run
    here)."""
    import psutil

    procs = ray_train_processes() or joined_cluster_processes()
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
