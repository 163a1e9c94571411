"""Scheduled runs take the workdir lock (:func:`seqflow.deploy.run_lock`, entered by the
``pipeline`` flow): the deployment's flow function, run on a real Prefect ephemeral API in its own
process while another live process holds the lock, fails within ``flow.lock_wait_s`` naming the
holder and touches nothing; a SIGKILLed holder's lock is taken over; the lock is released on
every exit; inside ``seqflow pipeline`` (which holds it already) the flow does not take it again."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import TINY_OVERRIDES, project_env
from seqflow.lock import WorkdirLock, WorkdirLockedError, active_lock, read_info

HOLDER = """
import sys, time
from seqflow.lock import WorkdirLock
lock = WorkdirLock(sys.argv[1], command="seqflow pipeline (started by hand)")
lock.acquire()
print("HELD", flush=True)
if sys.argv[2] == "die":
    import os, signal
    os.kill(os.getpid(), signal.SIGKILL)
time.sleep(120)
"""

FLOW = """
import json, sys, time
from seqflow.flow import compose_configs, pipeline
cfgs = compose_configs(json.loads(sys.argv[1]))
t0 = time.monotonic()
state = pipeline(cfgs, return_state=True)
waited = time.monotonic() - t0
try:
    state.result()
    error = None
except Exception as e:
    error = f"{type(e).__name__}: {e}"
from prefect import get_client
with get_client(sync_client=True) as client:  # Running -> Failed, as the Prefect server recorded it
    run = client.read_flow_run(state.state_details.flow_run_id)
print("RESULT " + json.dumps({"state": state.type.value, "message": state.message, "error": error,
                              "waited": waited, "run_s": (run.end_time - run.start_time).total_seconds()}), flush=True)
"""


def _holder(workdir: Path, mode: str = "hold") -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(workdir), mode], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "HELD"
    return p


@pytest.mark.slow
def test_a_scheduled_run_fails_within_its_wait_naming_the_live_holder(project: Path) -> None:
    holder = _holder(project)
    try:
        overrides = [*TINY_OVERRIDES, "model=trigger_word", "flow.lock_wait_s=3"]
        out = subprocess.run([sys.executable, "-c", FLOW, json.dumps(overrides)], cwd=project, env=project_env(project),
                             capture_output=True, text=True, timeout=300)
        line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
        assert line, f"exit {out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
        result = json.loads(line[len("RESULT "):])
        assert result["state"] == "FAILED"
        for text in (result["message"], result["error"]):  # the flow run's state and the error say who holds it
            assert f"is locked by pid {holder.pid} (seqflow pipeline (started by hand)) on host " in text
            assert "this flow run waited 3 s for it (flow.lock_wait_s)" in text
        assert result["error"].startswith("WorkdirLockedError: ")
        assert result["waited"] >= 3.0 and 3.0 <= result["run_s"] < 3.0 + 15.0  # the wait, then failed at once
        assert not (project / "data").exists()  # no stage ran
        assert read_info(project)["pid"] == holder.pid  # the holder's record is untouched
        assert holder.poll() is None
    finally:
        holder.kill()
        holder.wait()


def test_run_lock_takes_over_a_dead_holder_and_releases_on_every_exit(tmp_path: Path, caplog) -> None:
    from seqflow.deploy import run_lock

    dead = _holder(tmp_path, "die")
    assert dead.wait(timeout=30) == -signal.SIGKILL
    assert read_info(tmp_path)["pid"] == dead.pid  # a SIGKILLed holder leaves its record
    cfgs = [{"workdir": str(tmp_path), "flow": {"lock_wait_s": 0}}]
    caplog.set_level(logging.WARNING)
    with pytest.raises(ValueError, match="a stage failed"):
        with run_lock(cfgs):
            info = read_info(tmp_path)
            assert info["pid"] == os.getpid() and info["command"].startswith("prefect flow run ")
            assert active_lock() is not None
            raise ValueError("a stage failed")
    assert f"left by a holder that is gone (pid {dead.pid} " in caplog.text
    assert f"dead holder (pid {dead.pid} on " in caplog.text  # fault_state.recover_stale ran
    assert active_lock() is None and read_info(tmp_path) is None  # released after the error
    with run_lock(cfgs):  # ... so the next run takes it at once
        assert read_info(tmp_path)["pid"] == os.getpid()
    assert read_info(tmp_path) is None


def test_run_lock_inside_seqflow_pipeline_reuses_its_lock_and_zero_wait_fails_at_once(tmp_path: Path) -> None:
    from seqflow.deploy import run_lock

    cfgs = [{"workdir": str(tmp_path), "flow": {"lock_wait_s": 0}}]
    with WorkdirLock(tmp_path, command="seqflow pipeline") as lock:  # as flow.run_pipeline holds it
        with run_lock(cfgs):
            assert active_lock() is lock and read_info(tmp_path)["command"] == "seqflow pipeline"
        assert read_info(tmp_path)["pid"] == os.getpid()  # not released by the nested flow
    import prefect.runtime  # noqa: F401 - imported by run_lock: seconds on a busy box, not part of the wait

    holder = _holder(tmp_path)
    try:
        t0 = time.monotonic()
        with pytest.raises(WorkdirLockedError, match=rf"locked by pid {holder.pid} .*waited 0 s for it"):
            with run_lock(cfgs):
                pass
        assert time.monotonic() - t0 < 2.0
    finally:
        holder.kill()
        holder.wait()


def test_lock_wait_is_a_checked_config_value() -> None:
    from seqflow.config import load_config
    from seqflow.errors import ConfigError
    from seqflow.schema import check_overrides

    assert load_config([]).flow.lock_wait_s == 1800  # the documented default (docs/scheduling.md)
    with pytest.raises(ConfigError) as err:
        check_overrides(["flow.lock_wait_s=-1"])
    assert str(err.value) == "flow.lock_wait_s=-1: must be a number >= 0"
