"""Test helpers that run real work in other processes: MLflow store clients from a forkserver, and a Prefect
flow script in its own session (its temporary Prefect server is killed with it)."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
from pathlib import Path


_STORE_MODULES = ["mlflow.store.model_registry.sqlalchemy_store", "mlflow.store.tracking.sqlalchemy_store",
                  "seqflow.tracking.registry"]


def fork_all(target, args_list, timeout: float = 240) -> list:
    """``target(*args, q)`` in one process per ``args``; their ``q.put`` results (in finishing order).

    The processes are forked from a fresh forkserver that has imported MLflow's SQLAlchemy stores,
    seqflow's registry and ``target``'s module once, so they start in milliseconds, yet inherit none
    of this (long-lived, many-threaded) test process: a plain ``fork`` here once hung a child on a
    lock another thread held at the fork, after hundreds of earlier tests in the same process."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([*_STORE_MODULES, target.__module__])
    q = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*a, q)) for a in args_list]
    for p in procs:
        p.start()
    out = [q.get(timeout=timeout) for _ in procs]
    for p in procs:
        p.join(timeout)
    return out


def run_flow_script(script: str, tmp_path: Path, timeout: float = 300):
    """Run ``python -c script tmp_path`` on a Prefect ephemeral API homed in ``tmp_path`` and return
    the JSON of its last stdout line. The script runs in its own session, killed afterwards with
    its temporary Prefect server (which inherits files, not a pipe). Fails the test with the
    script's stderr tail when it exits non-zero."""
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / ".prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}
    with open(tmp_path / "out", "w") as fo, open(tmp_path / "err", "w") as fe:
        p = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=fo, stderr=fe, env=env,
                             start_new_session=True)
    try:
        rc = p.wait(timeout)
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert rc == 0, (tmp_path / "err").read_text()[-3000:]
    return json.loads((tmp_path / "out").read_text().strip().splitlines()[-1])
