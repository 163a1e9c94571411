"""The workdir lock between real processes: fail at once naming the holder, --wait queues, a
SIGKILLed holder's lock is taken over with its record (MLflow runs, Prefect flow run)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from seqflow.lock import LOCK_NAME, WorkdirLock, WorkdirLockedError, read_info

HOLDER = """
import sys, time
from seqflow.lock import WorkdirLock
lock = WorkdirLock(sys.argv[1], command="seqflow pipeline holder-test")
lock.acquire(wait=len(sys.argv) > 3)
lock.record(mlflow_run_id="run-a", prefect_flow_run_id="flow-1", mlflow_tracking_uri="sqlite:///x.db")
print("HELD", flush=True)
time.sleep(float(sys.argv[2]))
lock.release()
print("RELEASED", flush=True)
"""


def _holder(workdir: Path, hold_s: float, wait: bool = False) -> subprocess.Popen:
    args = [sys.executable, "-c", HOLDER, str(workdir), str(hold_s)] + (["wait"] if wait else [])
    return subprocess.Popen(args, stdout=subprocess.PIPE, text=True)


def _until_held(p: subprocess.Popen) -> None:
    assert p.stdout.readline().strip() == "HELD"


def test_second_holder_fails_at_once_naming_the_holder(tmp_path: Path) -> None:
    p = _holder(tmp_path, 30)
    try:
        _until_held(p)
        t0 = time.monotonic()
        with pytest.raises(WorkdirLockedError) as e:
            WorkdirLock(tmp_path).acquire()
        assert time.monotonic() - t0 < 1.0
        msg = str(e.value)
        assert f"pid {p.pid}" in msg and "seqflow pipeline holder-test" in msg and socket.gethostname() in msg
        assert "--wait" in msg and str(tmp_path / LOCK_NAME) in msg and "\n" not in msg
        assert read_info(tmp_path)["started"].endswith("+00:00")
    finally:
        p.kill()
        p.wait()


def test_wait_queues_until_the_holder_releases(tmp_path: Path) -> None:
    p = _holder(tmp_path, 1.5)
    try:
        _until_held(p)
        lock = WorkdirLock(tmp_path, command="second")
        t0 = time.monotonic()
        assert lock.acquire(wait=True, poll_s=0.1) is None  # a clean release leaves no stale record
        assert time.monotonic() - t0 > 0.5 and p.wait(10) == 0
        assert read_info(tmp_path)["pid"] == os.getpid() and read_info(tmp_path)["command"] == "second"
        with pytest.raises(WorkdirLockedError, match="timeout|locked by pid"):
            WorkdirLock(tmp_path).acquire(wait=True, poll_s=0.1, timeout_s=0.3)
        lock.release()
        assert not (tmp_path / LOCK_NAME).exists()
    finally:
        p.kill()
        p.wait()


def test_dead_holder_is_taken_over_with_its_record(tmp_path: Path, caplog) -> None:
    p = _holder(tmp_path, 60)
    _until_held(p)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    lock = WorkdirLock(tmp_path, command="next")
    with caplog.at_level(logging.WARNING, logger="seqflow.lock"):
        stale = lock.acquire()
    try:
        assert stale["pid"] == p.pid and stale["mlflow_run_ids"] == ["run-a"]
        assert stale["prefect_flow_run_id"] == "flow-1" and stale["mlflow_tracking_uri"] == "sqlite:///x.db"
        assert any("gone" in r.getMessage() and str(p.pid) in r.getMessage() for r in caplog.records)
        lock.record(mlflow_run_id="run-b")
        lock.record(mlflow_run_id="run-c")
        assert read_info(tmp_path)["mlflow_run_ids"] == ["run-b", "run-c"]
        lock.record(forget_mlflow_runs=True)
        assert read_info(tmp_path)["mlflow_run_ids"] == []
        assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temp files
    finally:
        lock.release()
