"""One ``seqflow pipeline`` per workdir: an exclusive lock with its holder's identity.

Two files under the workdir:

* ``.seqflow.lock.flock``: the mutex, an ``fcntl.flock`` held for the whole run. The kernel drops it
  when the holder dies, however it dies (SIGKILL included), so a dead holder never blocks anyone.
* ``.seqflow.lock`` (JSON, written atomically: temp file + rename): who holds it — ``pid``,
  ``command``, ``started`` (ISO 8601, UTC), ``hostname`` — and what it has opened so far:
  ``mlflow_run_ids`` (+ ``mlflow_tracking_uri``), ``prefect_flow_run_id`` and ``prefect_server``
  (the temporary Prefect server it started: pid, process start time, port). A clean release
  deletes it; finding it while the mutex is free means its holder died without releasing (SIGKILL,
  OOM, power loss): :meth:`WorkdirLock.acquire` then takes the lock over with a warning and returns
  that holder's record, so the caller can mark the holder's runs (see :mod:`seqflow.flow`).

>>> with WorkdirLock("/work/proj", command="seqflow pipeline") as lock:
...     lock.record(mlflow_run_id="abc123")      # while the run goes on
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from seqflow.errors import SeqflowError

log = logging.getLogger("seqflow.lock")

LOCK_NAME = ".seqflow.lock"
MUTEX_SUFFIX = ".flock"
COMMAND_SHOWN = 120  # characters of the holder's command in messages (the record keeps 500)

_active: "WorkdirLock | None" = None  # the lock this process holds, for record_* below


class WorkdirLockedError(SeqflowError):
    """Another live process holds the workdir lock (the message names it)."""


def describe(info: dict | None) -> str:
    """``pid 123 (seqflow pipeline ...) on host h since 2026-12-07T13:00:00+00:00`` for a holder record."""
    if not info:
        return "another process (no holder record yet)"
    command = str(info.get("command", "?"))
    command = command if len(command) <= COMMAND_SHOWN else command[:COMMAND_SHOWN - 3] + "..."
    return f"pid {info.get('pid')} ({command}) on host {info.get('hostname', '?')} since {info.get('started', '?')}"


def read_info(workdir: str | os.PathLike) -> dict | None:
    """The holder record of ``workdir``'s lock, or None when there is none (or it is unreadable)."""
    try:
        return json.loads((Path(workdir) / LOCK_NAME).read_text())
    except (OSError, ValueError):
        return None


def _write_json_atomic(path: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class WorkdirLock:
    """The exclusive lock of one workdir (see the module docstring).

    Args:
        workdir: the project folder (``cfg.workdir``); created if missing.
        command: what the holder runs, for other processes' messages (default: ``sys.argv``).
    """

    def __init__(self, workdir: str | os.PathLike, command: str | None = None) -> None:
        self.workdir = Path(workdir)
        self.path = self.workdir / LOCK_NAME
        self.command = command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:500]
        self.info: dict = {}
        self.stale: dict | None = None  # the dead holder's record this acquire took over from
        self._fd: int | None = None
        self._mutex = threading.Lock()

    def _try_flock(self) -> bool:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            raise

    def acquire(self, wait: bool = False, poll_s: float = 1.0, timeout_s: float | None = None) -> dict | None:
        """Take the lock; returns the record of a dead holder taken over (else None).

        Args:
            wait: queue until the holder releases (``--wait``) instead of failing at once.
            poll_s: seconds between tries while waiting; timeout_s: give up after this long (None: never).
        Raises:
            WorkdirLockedError: held by a live process (``wait`` False, or ``timeout_s`` passed);
                the message names the holder's pid, command, host and start time.
        """
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path.with_name(LOCK_NAME + MUTEX_SUFFIX), os.O_RDWR | os.O_CREAT, 0o644)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        told = False
        while not self._try_flock():
            holder = describe(read_info(self.workdir))
            if not wait or (deadline is not None and time.monotonic() > deadline):
                os.close(self._fd)
                self._fd = None
                hint = "" if wait else "; pass --wait to queue behind it"
                raise WorkdirLockedError(f"workdir {self.workdir} is locked by {holder}{hint} (lock file {self.path})")
            if not told:
                log.info("workdir %s is locked by %s; waiting", self.workdir, holder)
                told = True
            time.sleep(poll_s)
        self.stale = read_info(self.workdir)  # a record left behind: its holder died holding the lock
        if self.stale is not None:
            log.warning("workdir lock of %s was left by a holder that is gone (%s); taking it over",
                        self.workdir, describe(self.stale))
        now = datetime.now(timezone.utc)
        self.info = {"pid": os.getpid(), "command": self.command, "hostname": socket.gethostname(),
                     "started": now.isoformat(timespec="seconds"), "mlflow_tracking_uri": None,
                     "mlflow_run_ids": [], "prefect_flow_run_id": None, "prefect_server": None}
        _write_json_atomic(self.path, self.info)
        global _active
        _active = self
        return self.stale

    def record(self, mlflow_run_id: str | None = None, prefect_flow_run_id: str | None = None,
               mlflow_tracking_uri: str | None = None, forget_mlflow_runs: bool = False,
               prefect_server: dict | None = None) -> None:
        """Add what this run has opened to the holder record (rewritten atomically), so that a next
        run can mark it after this process is SIGKILLed. ``forget_mlflow_runs``: the recorded runs
        are complete (registered); drop them from the record first. ``prefect_server``: the
        temporary Prefect server this process started (``{"pid", "create_time", "port"}``), which
        a next run stops after a SIGKILL (:func:`seqflow.fault_state.recover_stale`)."""
        with self._mutex:
            if forget_mlflow_runs:
                self.info["mlflow_run_ids"] = []
            if mlflow_run_id and mlflow_run_id not in self.info["mlflow_run_ids"]:
                self.info["mlflow_run_ids"].append(mlflow_run_id)
            if prefect_flow_run_id:
                self.info["prefect_flow_run_id"] = str(prefect_flow_run_id)
            if mlflow_tracking_uri:
                self.info["mlflow_tracking_uri"] = mlflow_tracking_uri
            if prefect_server:
                self.info["prefect_server"] = dict(prefect_server)
            if self._fd is not None:
                _write_json_atomic(self.path, self.info)

    def release(self) -> None:
        """Delete the holder record, then drop the mutex (no-op when not held)."""
        global _active
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._fd)  # closing the descriptor drops the flock
        self._fd = None
        if _active is self:
            _active = None

    def __enter__(self) -> "WorkdirLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def active_lock() -> WorkdirLock | None:
    """The workdir lock this process holds, or None."""
    return _active


def record(**fields) -> None:
    """:meth:`WorkdirLock.record` on this process's lock; a no-op when it holds none (a stage
    called on its own, outside ``seqflow pipeline``)."""
    if _active is not None:
        _active.record(**fields)
