"""True state after faults: mark a stopped run's MLflow runs and Prefect flow run for what happened.

* the flow raised → MLflow runs ``FAILED``, Prefect flow run ``FAILED``;
* stopped by SIGINT/SIGTERM (:class:`Stopped`, a ``KeyboardInterrupt``) → MLflow ``KILLED``,
  Prefect ``CANCELLED``;
* SIGKILLed (no handler runs) → the next ``seqflow pipeline`` in the workdir finds the dead
  holder's lock record (:mod:`seqflow.lock`) and marks its MLflow runs ``KILLED`` and its Prefect
  flow run ``CRASHED`` (:func:`recover_stale`).

Only the MLflow runs still in the lock record are marked: a model whose register stage finished
is complete, and its runs are dropped from the record then.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import Iterator

log = logging.getLogger("seqflow.pipeline")


class Stopped(KeyboardInterrupt):
    """The pipeline was stopped by a signal (SIGTERM; SIGINT raises ``KeyboardInterrupt`` itself)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Stopped` in the main thread (as Ctrl-C raises
    ``KeyboardInterrupt``), so the ``finally``/``except`` blocks run. No-op off the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum, _frame):
        raise Stopped(signum)

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def mark_mlflow_runs(run_ids: list[str], status: str, tracking_uri: str | None) -> list[str]:
    """Set each run's status (``FAILED``/``KILLED``) unless it is already ``FAILED``/``KILLED``;
    returns the runs changed. A run that cannot be read is logged and skipped."""
    from mlflow.tracking import MlflowClient

    if not run_ids or not tracking_uri:
        return []
    client, changed = MlflowClient(tracking_uri=tracking_uri), []
    for run_id in run_ids:
        try:
            if client.get_run(run_id).info.status in ("FAILED", "KILLED"):
                continue
            client.set_terminated(run_id, status)
            changed.append(run_id)
        except Exception as e:  # noqa: BLE001 - keep marking the others
            log.warning("cannot mark MLflow run %s %s: %s", run_id, status, str(e).splitlines()[0] if str(e) else e)
    return changed


def mark_prefect_flow_run(flow_run_id: str | None, state: str, message: str) -> bool:
    """Force the Prefect flow run into ``state`` (``FAILED``, ``CANCELLED``, ``CRASHED``) unless it
    is already there; returns whether it changed. Errors are logged, not raised."""
    if not flow_run_id:
        return False
    from prefect import get_client
    from prefect.states import Cancelled, Crashed, Failed

    make = {"FAILED": Failed, "CANCELLED": Cancelled, "CRASHED": Crashed}[state]
    try:
        with get_client(sync_client=True) as client:
            current = client.read_flow_run(flow_run_id).state
            if current is not None and current.type.value == state:
                return False
            client.set_flow_run_state(flow_run_id, make(message=message), force=True)
        return True
    except Exception as e:  # noqa: BLE001 - best effort: the error that stopped the run matters more
        log.warning("cannot mark Prefect flow run %s %s: %s", flow_run_id, state,
                    str(e).splitlines()[0] if str(e) else e)
        return False


def mark_stopped(info: dict, exc: BaseException) -> None:
    """Mark this run's recorded MLflow runs and Prefect flow run after ``exc`` stopped the flow:
    ``KILLED``/``CANCELLED`` for a signal (``KeyboardInterrupt``; ``SystemExit``, which Ray's
    SIGTERM handler raises in a driver that called ``ray.init``), ``FAILED``/``FAILED`` otherwise."""
    signalled = isinstance(exc, (KeyboardInterrupt, SystemExit))  # Ray's driver turns SIGTERM into SystemExit
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, SystemExit):
        reason = f"SystemExit({exc.code}), as Ray's driver raises on SIGTERM"
    runs = list(info.get("mlflow_run_ids") or [])  # FAILED/KILLED already (by the train stage) or now
    mark_mlflow_runs(runs, "KILLED" if signalled else "FAILED", info.get("mlflow_tracking_uri"))
    flow = mark_prefect_flow_run(info.get("prefect_flow_run_id"), "CANCELLED" if signalled else "FAILED",
                                 f"seqflow pipeline stopped: {reason}")
    log.info("pipeline %s (%s): MLflow run(s) %s marked %s%s", "stopped" if signalled else "failed", reason,
             ", ".join(runs) or "(none)", "KILLED" if signalled else "FAILED",
             f"; Prefect flow run {info.get('prefect_flow_run_id')} marked "
             f"{'CANCELLED' if signalled else 'FAILED'}" if flow else "")


def recover_stale(stale: dict) -> None:
    """After taking over a dead holder's lock: its recorded MLflow runs → ``KILLED``, its Prefect
    flow run → ``CRASHED`` (no handler ran when it was SIGKILLed)."""
    who = f"pid {stale.get('pid')} on {stale.get('hostname')}, started {stale.get('started')}"
    runs = mark_mlflow_runs(list(stale.get("mlflow_run_ids") or []), "KILLED", stale.get("mlflow_tracking_uri"))
    flow = mark_prefect_flow_run(stale.get("prefect_flow_run_id"), "CRASHED",
                                 f"its process ({who}) died without ending the run (e.g. SIGKILL)")
    log.warning("dead holder (%s): MLflow run(s) %s marked KILLED%s", who, ", ".join(runs) or "(none)",
                f"; Prefect flow run {stale.get('prefect_flow_run_id')} marked CRASHED" if flow else "")
