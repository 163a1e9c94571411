"""True state after faults: mark a stopped run's MLflow runs and Prefect flow run for what happened.

* the flow raised → MLflow runs ``FAILED``, Prefect flow run ``FAILED``;
* stopped by SIGINT/SIGTERM (:class:`Stopped`, a ``KeyboardInterrupt``) → MLflow ``KILLED``,
  Prefect ``CANCELLED``;
* SIGKILLed (no handler runs) → the next ``seqflow pipeline`` in the workdir finds the dead
  holder's lock record (:mod:`seqflow.lock`), stops the temporary Prefect server the holder left
  running (its pid and start time are in the record) and marks its MLflow runs ``KILLED`` and its
  Prefect flow run ``CRASHED`` (:func:`recover_stale`).

Only the MLflow runs still in the lock record are marked: a model whose register stage finished
is complete, and its runs are dropped from the record then.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from typing import Callable, Iterator

log = logging.getLogger("seqflow.pipeline")


class Stopped(KeyboardInterrupt):
    """The pipeline was stopped by a signal (``signum``: SIGTERM or SIGINT). ``summary`` says what
    was marked (:func:`mark_stopped`); the CLI prints it and exits ``128 + signum``
    (:func:`exit_line`)."""

    def __init__(self, signum: int, summary: str = "") -> None:
        self.signum, self.summary = signum, summary
        super().__init__(f"stopped by {signal.Signals(signum).name}")


_received: list[int] = []  # SIGINT/SIGTERM received while stop_on_sigterm is active, in order
_seen = threading.Event()


def _watch_signals(read_fd: int) -> None:
    """Thread: read the signal numbers Python's C-level handler writes to the wakeup fd. Ray's C++
    core worker (absl's failure signal handler) answers SIGTERM with ``alarm(3)`` whose SIGALRM
    calls ``abort()``: any clean-up longer than 3 s then ended in SIGABRT (exit 134). The alarm is
    cancelled here, milliseconds after the signal, whoever's Python handler runs."""
    with open(read_fd, "rb", buffering=0) as pipe:
        while data := pipe.read(64):
            for signum in data:
                if signum in (signal.SIGTERM, signal.SIGINT):
                    if signum == signal.SIGTERM:
                        signal.alarm(0)
                    _received.append(signum)
                    _seen.set()


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Stopped` in the main thread (as Ctrl-C raises
    ``KeyboardInterrupt``), so the ``finally``/``except`` blocks run, and every SIGINT/SIGTERM is
    noted (:func:`stop_signal`) even when Ray or Prefect replaced the Python handler (Ray's driver
    turns both into ``SystemExit(1)``). No-op off the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum, _frame):
        raise Stopped(signum)

    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    _received.clear()
    _seen.clear()
    watcher = threading.Thread(target=_watch_signals, args=(read_fd,), name="seqflow-signals", daemon=True)
    watcher.start()
    previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.set_wakeup_fd(previous_fd)
        os.close(write_fd)  # the watcher reads EOF and ends


def stop_signal(exc: BaseException) -> int | None:
    """The signal that stopped the run (the first SIGINT/SIGTERM noted by :func:`stop_on_sigterm`,
    else read from ``exc``: :class:`Stopped`, ``KeyboardInterrupt`` = SIGINT), or None when
    ``exc`` is an ordinary failure."""
    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
        _seen.wait(1.0)  # the watcher thread may not have run yet
    if _received:
        return _received[0]
    if isinstance(exc, Stopped):
        return exc.signum
    return signal.SIGINT if isinstance(exc, KeyboardInterrupt) else None


def exit_line(stopped: KeyboardInterrupt, command: str = "seqflow pipeline") -> tuple[str, int]:
    """``(line, exit code)`` for a run a signal stopped (:class:`Stopped`, or a plain
    ``KeyboardInterrupt`` raised before any run was open): ``seqflow pipeline: stopped by SIGTERM;
    MLflow run <id> KILLED, Prefect flow run <id> CANCELLED`` and ``128 + signum`` (143 SIGTERM,
    130 SIGINT: the shell's convention)."""
    if not isinstance(stopped, Stopped):
        stopped = Stopped(stop_signal(stopped) or signal.SIGINT)
    name = signal.Signals(stopped.signum).name
    return f"{command}: stopped by {name}; {stopped.summary or 'no runs were open'}", 128 + int(stopped.signum)


def mark_mlflow_runs(run_ids: list[str], status: str, tracking_uri: str | None,
                     keep: tuple[str, ...] = ("FAILED", "KILLED")) -> dict[str, str]:
    """Set each run's status (``FAILED``/``KILLED``) unless it is already one of ``keep``;
    returns ``{run id: its status now}`` (the runs it could read). A run that cannot be read is
    logged and skipped."""
    from mlflow.tracking import MlflowClient

    if not run_ids or not tracking_uri:
        return {}
    client, now = MlflowClient(tracking_uri=tracking_uri), {}
    for run_id in run_ids:
        try:
            current = client.get_run(run_id).info.status
            if current in keep:
                now[run_id] = current
                continue
            client.set_terminated(run_id, status)
            now[run_id] = status
        except Exception as e:  # noqa: BLE001 - keep marking the others
            log.warning("cannot mark MLflow run %s %s: %s", run_id, status, str(e).splitlines()[0] if str(e) else e)
    return now


def mark_prefect_flow_run(flow_run_id: str | None, state: str, message: str) -> bool:
    """Force the Prefect flow run into ``state`` (``FAILED``, ``CANCELLED``, ``CRASHED``) unless it
    is already there; returns whether it is in ``state`` now. Errors are logged, not raised."""
    if not flow_run_id:
        return False
    from prefect import get_client
    from prefect.states import Cancelled, Crashed, Failed

    make = {"FAILED": Failed, "CANCELLED": Cancelled, "CRASHED": Crashed}[state]
    try:
        with get_client(sync_client=True) as client:
            current = client.read_flow_run(flow_run_id).state
            if current is not None and current.type.value == state:
                return True
            client.set_flow_run_state(flow_run_id, make(message=message), force=True)
        return True
    except Exception as e:  # noqa: BLE001 - best effort: the error that stopped the run matters more
        log.warning("cannot mark Prefect flow run %s %s: %s", flow_run_id, state,
                    str(e).splitlines()[0] if str(e) else e)
        return False


def mark_stopped(info: dict, exc: BaseException) -> Stopped | None:
    """Mark this run's recorded MLflow runs and Prefect flow run after ``exc`` stopped the flow:
    ``KILLED``/``CANCELLED`` for a signal (:func:`stop_signal`; also ``SystemExit``, which Ray's
    driver raises on SIGINT/SIGTERM), ``FAILED``/``FAILED`` otherwise. Returns :class:`Stopped`
    (with what was marked) to raise instead of ``exc`` for a signal, None for a failure."""
    signum = stop_signal(exc)
    signalled = signum is not None or isinstance(exc, SystemExit)
    if signum is not None:
        reason = f"stopped by {signal.Signals(signum).name}"
    else:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    status, flow_state = ("KILLED", "CANCELLED") if signalled else ("FAILED", "FAILED")
    # FAILED/KILLED already (by the train stage) or now
    runs = mark_mlflow_runs(list(info.get("mlflow_run_ids") or []), status, info.get("mlflow_tracking_uri"))
    flow_run = info.get("prefect_flow_run_id")
    flow = mark_prefect_flow_run(flow_run, flow_state, f"seqflow pipeline stopped: {reason}")
    summary = ", ".join([f"MLflow run {r} {s}" for r, s in runs.items()]
                        + ([f"Prefect flow run {flow_run} {flow_state}"] if flow else [])) or "no runs were open"
    log.info("pipeline %s (%s): %s", "stopped" if signalled else "failed", reason, summary)
    return Stopped(signum, summary) if signum is not None else None


SERVER_APP = "prefect.server.api.server:create_app"  # in the temporary server's command line


def start_prefect_server(on_spawn: Callable[[dict], None] | None = None) -> dict | None:
    """Start Prefect's temporary (ephemeral) API server now, as the flow's first client would
    (same singleton, ``SubprocessASGIServer()``), and return its identity ``{"pid", "create_time",
    "port"}`` for the workdir lock record; None when ``PREFECT_API_URL`` names a server (nothing
    is started then). Recorded, it lets a next run stop the server a SIGKILLed holder left behind
    (:func:`stop_stale_server`). ``on_spawn(identity)`` is called as soon as the server process
    exists, before its start-up (seconds) ends, so that a kill during the start-up is covered too
    (it wraps Prefect's private ``_run_uvicorn_command``; without it, only after the start-up)."""
    import psutil
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return None
    server = SubprocessASGIServer()

    def identity(proc) -> dict:
        return {"pid": proc.pid, "create_time": psutil.Process(proc.pid).create_time(), "port": server.port}

    spawn = getattr(server, "_run_uvicorn_command", None) if on_spawn is not None and not server.running else None
    if spawn is None:
        server.start()
    else:
        def spawn_and_record():
            proc = spawn()
            on_spawn(identity(proc))
            return proc
        server._run_uvicorn_command = spawn_and_record  # for this start only
        try:
            server.start()
        finally:
            del server._run_uvicorn_command
    return identity(server.server_process)


def stop_stale_server(record: dict | None, hostname: str | None) -> bool:
    """Stop the temporary Prefect server of a dead lock holder (``record`` from its lock record)
    if it still runs; returns whether one was stopped. Only a process on this host with the
    recorded pid *and* start time (a reused pid has another) whose command line runs Prefect's
    server app is signalled: SIGTERM, then SIGKILL after 10 s."""
    import socket

    import psutil

    if not record or hostname != socket.gethostname():
        return False
    try:
        proc = psutil.Process(int(record["pid"]))
        if abs(proc.create_time() - float(record["create_time"])) > 1.0 or SERVER_APP not in " ".join(proc.cmdline()):
            return False  # the pid was reused by another process
        proc.terminate()
        try:
            proc.wait(10)
        except psutil.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        return True
    except psutil.NoSuchProcess:
        return False  # already gone
    except (psutil.Error, KeyError, TypeError, ValueError) as e:
        log.warning("cannot stop the dead holder's Prefect server %s: %s", record, e)
        return False


def recover_stale(stale: dict) -> None:
    """After taking over a dead holder's lock: stop the temporary Prefect server it left running
    (:func:`stop_stale_server`), mark its recorded MLflow runs ``KILLED`` (also those marked
    ``FAILED`` as its Ray workers ended after it) and its Prefect flow run ``CRASHED`` (no handler
    ran when it was SIGKILLed)."""
    who = f"pid {stale.get('pid')} on {stale.get('hostname')}, started {stale.get('started')}"
    server = stale.get("prefect_server") or {}
    if stop_stale_server(server, stale.get("hostname")):
        log.warning("dead holder (%s): stopped its temporary Prefect server (pid %s, port %s)", who,
                    server.get("pid"), server.get("port"))
    # keep=KILLED: when only the driver is SIGKILLed its Ray workers end after it, and Lightning
    # marks the run FAILED as they go; the holder was killed all the same
    runs = mark_mlflow_runs(list(stale.get("mlflow_run_ids") or []), "KILLED", stale.get("mlflow_tracking_uri"),
                            keep=("KILLED",))
    runs = [r for r, status in runs.items() if status == "KILLED"]
    flow = mark_prefect_flow_run(stale.get("prefect_flow_run_id"), "CRASHED",
                                 f"its process ({who}) died without ending the run (e.g. SIGKILL)")
    log.warning("dead holder (%s): MLflow run(s) %s marked KILLED%s", who, ", ".join(runs) or "(none)",
                f"; Prefect flow run {stale.get('prefect_flow_run_id')} marked CRASHED" if flow else "")
