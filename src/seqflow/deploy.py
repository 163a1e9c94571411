"""``seqflow deploy``: the ``pipeline`` flow as a scheduled Prefect deployment.

Two ways to run it, both needing a Prefect server (``prefect server start``; the ephemeral API
cannot schedule) named by ``PREFECT_API_URL``:

* served (default): :func:`serve` registers the deployment and keeps polling for its scheduled
  runs in this long-running process, each run in a subprocess (``prefect.serve``);
* work pool: :func:`register` registers it to a work pool and returns; a
  ``prefect worker start --pool <name>`` started from the same environment runs the runs.

Either way the schedule is ``flow.cron`` (in ``flow.timezone``) or, when set, ``flow.interval``
seconds, and the deployment carries a **concurrency limit of 1** (a run due while another is
running waits, ``flow.collision_strategy: ENQUEUE``, or is cancelled, ``CANCEL_NEW``): scheduled
runs never overlap, whichever serve processes or workers pick them up. Every run gets the
configs composed at deploy time as its ``cfgs`` parameter, so a run is the same pipeline
``seqflow pipeline <same overrides>`` would run.

Every run also takes the workdir lock (:func:`run_lock`, entered by the flow itself), so a
scheduled run and a ``seqflow pipeline`` started by hand in the same workdir never overlap either:
the scheduled run waits at most ``flow.lock_wait_s`` seconds for a live holder, then fails naming it.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

from seqflow.errors import ConfigError, SeqflowError

FLOW_NAME = "pipeline"  # the @flow name in seqflow.flow
CONCURRENCY_LIMIT = 1   # one pipeline at a time: runs share the workdir (data/, shards/, DVC)
COLLISION_STRATEGIES = ("ENQUEUE", "CANCEL_NEW")
DEFAULT_LOCK_WAIT_S = 1800.0  # flow.lock_wait_s when a run's configs predate the key


class DeployError(SeqflowError):
    """No Prefect server to deploy to (``PREFECT_API_URL`` unset or unreachable), or a work pool
    that does not exist. The message is one line naming the reason and the fix."""


def api_url() -> str | None:
    """``PREFECT_API_URL`` as Prefect resolves it (environment first, then the active profile)."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def check_server(url: str | None, timeout_s: float = 10.0) -> str:
    """Check that a Prefect server answers ``GET <url>/health``; returns ``url``.

    Raises:
        DeployError: ``url`` is empty (``PREFECT_API_URL`` not set), the server cannot be reached
            within ``timeout_s`` seconds, or it answers with an error status.
    """
    import httpx

    if not url:
        raise DeployError("PREFECT_API_URL is not set: start a server with `prefect server start` and "
                          "export PREFECT_API_URL=http://127.0.0.1:4200/api (the ephemeral API cannot schedule)")
    headers = {"Authorization": f"Bearer {os.environ['PREFECT_API_KEY']}"} if os.environ.get("PREFECT_API_KEY") else {}
    try:
        resp = httpx.get(url.rstrip("/") + "/health", timeout=timeout_s, headers=headers)
    except httpx.HTTPError as exc:
        raise DeployError(f"Prefect server at {url} is unreachable ({type(exc).__name__}: {exc}); "
                          "is `prefect server start` running there?") from None
    if resp.status_code != 200:
        raise DeployError(f"Prefect server at {url} answered GET /health with HTTP {resp.status_code}; "
                          "is PREFECT_API_URL the server's /api URL?")
    return url


def make_schedule(flow_cfg: dict) -> Any:
    """The deployment's schedule from the ``flow`` config section: an ``IntervalSchedule`` of
    ``interval`` seconds when that is set, else a ``CronSchedule`` of ``cron`` in ``timezone``.

    Raises:
        ConfigError: interval not a positive number of seconds, invalid cron string or time zone.
    """
    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule
    from pydantic import ValidationError

    interval, tz = flow_cfg.get("interval"), flow_cfg.get("timezone") or None
    try:
        if interval is not None:
            if isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval <= 0:
                raise ConfigError(f"flow.interval must be a positive number of seconds or null, got {interval!r}")
            from datetime import timedelta

            return IntervalSchedule(interval=timedelta(seconds=float(interval)), timezone=tz)
        return CronSchedule(cron=str(flow_cfg["cron"]), timezone=tz)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"flow.{'interval' if interval is not None else 'cron'}/flow.timezone: "
                          f"{err['msg'].removeprefix('Value error, ')}") from None


def concurrency_config(flow_cfg: dict) -> Any:
    """``ConcurrencyLimitConfig(limit=1, collision_strategy=flow.collision_strategy)``.

    Raises:
        ConfigError: a collision strategy other than ENQUEUE or CANCEL_NEW.
    """
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

    strategy = str(flow_cfg.get("collision_strategy") or "ENQUEUE").upper()
    if strategy not in COLLISION_STRATEGIES:
        raise ConfigError(f"flow.collision_strategy must be one of {', '.join(COLLISION_STRATEGIES)}, "
                          f"got {flow_cfg.get('collision_strategy')!r}")
    return ConcurrencyLimitConfig(limit=CONCURRENCY_LIMIT, collision_strategy=ConcurrencyLimitStrategy(strategy))


def build_deployment(cfgs: list[dict]) -> Any:
    """A ``RunnerDeployment`` of the ``pipeline`` flow named ``flow.deployment_name``: the
    schedule of :func:`make_schedule`, concurrency limit 1, ``cfgs`` as its parameters, a
    module-path entrypoint (``seqflow.flow.pipeline``: any process with seqflow installed can
    load it, whatever its working directory), not paused (re-deploying resumes a schedule a
    stopped ``seqflow deploy`` paused).

    Raises:
        ConfigError: see :func:`make_schedule`, :func:`concurrency_config`.
    """
    from prefect.deployments.runner import EntrypointType

    from seqflow.flow import pipeline

    flow_cfg = cfgs[0]["flow"]
    models = ", ".join(c["model"]["name"] for c in cfgs)
    return pipeline.to_deployment(
        name=str(flow_cfg["deployment_name"]),
        schedules=[make_schedule(flow_cfg)],
        concurrency_limit=concurrency_config(flow_cfg),
        parameters={"cfgs": cfgs},
        paused=False,
        tags=[str(t) for t in flow_cfg.get("tags") or []],
        description=f"seqflow pipeline ({models}) in {cfgs[0]['workdir']}: prepare → validate → version → "
                    "shard → train → evaluate → register",
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


def _run_command() -> str:
    """What the lock record says this holder runs: the Prefect flow run and its deployment."""
    from prefect.runtime import deployment, flow_run

    where = f"deployment {FLOW_NAME}/{deployment.name}" if deployment.name else "no deployment"
    return f"prefect flow run {flow_run.name} of flow {FLOW_NAME} ({where}; flow run id {flow_run.id})"


@contextlib.contextmanager
def run_lock(cfgs: list[dict]) -> Iterator[None]:
    """Hold the workdir lock (:mod:`seqflow.lock`) around a ``pipeline`` flow run that does not
    have it yet: a scheduled or served run (``seqflow deploy``), a work-pool worker's run, a
    direct call of the flow. A no-op when this process holds it already (``seqflow pipeline``
    takes it in :func:`seqflow.flow.run_pipeline` before starting the flow).

    A live holder (e.g. a ``seqflow pipeline`` started by hand) is waited for at most
    ``flow.lock_wait_s`` seconds (``cfgs[0]``; :data:`DEFAULT_LOCK_WAIT_S` when absent; 0: not at
    all). A lock left by a dead holder is taken over and that holder's runs marked
    (:func:`seqflow.fault_state.recover_stale`: MLflow KILLED, Prefect CRASHED). When the flow
    raises, this run's recorded MLflow runs are marked FAILED (KILLED for a signal); Prefect marks
    the flow run itself. A stage still running ``flow.timeout_grace_s`` after its limit ends the
    process (:func:`seqflow.stage_timeout.hard_exit_on_hang`: MLflow and Prefect FAILED, exit 124),
    as under ``seqflow pipeline``. The lock is released on every exit.

    Raises:
        seqflow.lock.WorkdirLockedError: still held by a live process after the wait; one line
            naming the holder's pid, command, host and start time, and the wait.
    """
    from seqflow import fault_state, stage_timeout
    from seqflow import lock as workdir_lock

    if workdir_lock.active_lock() is not None:
        yield
        return
    wait_s = float((cfgs[0].get("flow") or {}).get("lock_wait_s", DEFAULT_LOCK_WAIT_S))
    lock = workdir_lock.WorkdirLock(cfgs[0]["workdir"], command=_run_command())
    try:
        stale = lock.acquire(wait=True, timeout_s=wait_s, poll_s=min(1.0, max(wait_s / 10, 0.1)))
    except workdir_lock.WorkdirLockedError as e:
        raise workdir_lock.WorkdirLockedError(f"{e}; this flow run waited {wait_s:g} s for it (flow.lock_wait_s)") \
            from None
    try:
        if stale:
            fault_state.recover_stale(stale)
        # a stage that does not return after its limit's interrupt ends this flow run's process, as
        # under `seqflow pipeline`: its runs marked (Prefect too: it cannot mark a process that is gone)
        with stage_timeout.hard_exit_on_hang(lambda err: (fault_state.mark_stopped(lock.info, err), lock.release())):
            try:
                yield
            except BaseException as e:
                fault_state.mark_stopped({**lock.info, "prefect_flow_run_id": None}, e)  # Prefect marks its own run
                raise
    finally:
        lock.release()


def describe(cfgs: list[dict]) -> str:
    """One line: what will be scheduled and when."""
    flow_cfg = cfgs[0]["flow"]
    when = (f"every {flow_cfg['interval']} s" if flow_cfg.get("interval") is not None
            else f"cron {flow_cfg['cron']!r} ({flow_cfg.get('timezone') or 'UTC'})")
    return (f"deployment {FLOW_NAME}/{flow_cfg['deployment_name']}: {when}, concurrency limit "
            f"{CONCURRENCY_LIMIT} ({str(flow_cfg.get('collision_strategy') or 'ENQUEUE').upper()}), "
            f"models {[c['model']['name'] for c in cfgs]}, workdir {cfgs[0]['workdir']}")


def serve(cfgs: list[dict]) -> None:
    """Register the deployment and serve it from this process until interrupted (Ctrl-C or
    SIGTERM pauses its schedule, ``pause_on_shutdown``). Blocks.

    Raises:
        DeployError: no reachable Prefect server (checked first).
        ConfigError: bad ``flow`` settings.
    """
    import prefect

    check_server(api_url())
    deployment = build_deployment(cfgs)
    prefect.serve(deployment, pause_on_shutdown=True)


def register(cfgs: list[dict], work_pool: str) -> str:
    """Register the deployment to ``work_pool`` (no serving here) and return its id; a
    ``prefect worker start --pool <work_pool>`` with seqflow installed runs its runs.

    Raises:
        DeployError: no reachable Prefect server, or no such work pool.
        ConfigError: bad ``flow`` settings.
    """
    import prefect

    check_server(api_url())
    deployment = build_deployment(cfgs)
    try:
        ids = prefect.deploy(deployment, work_pool_name=work_pool, build=False, push=False,
                             print_next_steps_message=False, ignore_warnings=True)
    except ValueError as exc:  # prefect.deploy: "Could not find work pool 'x'. Please create it ..."
        line = str(exc).splitlines()[0]
        hint = f" (prefect work-pool create {work_pool} --type process)" if "Could not find work pool" in line else ""
        raise DeployError(line + hint) from None
    return str(ids[0])
