"""Stage timeouts on a real Prefect flow (ephemeral API), a real MLflow SQLite store and the real
workdir lock: a stage past ``flow.timeouts.<stage>`` ends the flow FAILED with one line, its MLflow
run FAILED and the lock released; a stage that cannot be interrupted (blocked with signals masked,
as C code that never returns to the interpreter) ends the process after ``flow.timeout_grace_s``
with the same true state and exit status 124 (shown in a scheduled run: the flow takes the lock
itself, :func:`seqflow.deploy.run_lock`, with no ``seqflow pipeline`` around it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

SCRIPT = textwrap.dedent("""
    import json, signal, sys, time
    import mlflow
    from prefect import flow, get_client, task
    from prefect.runtime import flow_run
    from seqflow import fault_state, lock as workdir_lock, stage_timeout

    workdir = sys.argv[1]
    uri = f"sqlite:///{workdir}/mlflow.db"
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("t")
    cfg = {"flow": {"timeouts": {"train": 1.5, "version": 1.0, "package": 1.0}, "timeout_grace_s": 2.0}}
    attempts = []

    @task(name="train")
    @stage_timeout.limited("train")
    def train(cfg):  # Python code: the interrupt lands at once
        time.sleep(120)

    @task(name="version", retries=2, retry_delay_seconds=0, retry_condition_fn=stage_timeout.not_timed_out)
    @stage_timeout.limited("version")
    def version(cfg):  # a timed-out stage is not retried
        attempts.append(1)
        time.sleep(120)

    @task(name="package")
    @stage_timeout.limited("package")
    def package(cfg):  # signals masked: the interrupt never lands (like C code that ignores it)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        time.sleep(120)

    def stages(stage):  # as seqflow.flow._run_stages: record this flow run and its MLflow run, then run
        run_id = client.create_run(exp).info.run_id
        workdir_lock.record(prefect_flow_run_id=flow_run.id, mlflow_tracking_uri=uri, mlflow_run_id=run_id)
        print(json.dumps({"run_id": run_id, "flow_run_id": str(flow_run.id), "t": time.monotonic()}), flush=True)
        {"train": train, "version": version, "package": package}[stage](cfg)

    @flow(name="limited")
    def limited(stage):
        stages(stage)

    def pipeline(stage):  # what seqflow.flow.run_pipeline and the CLI do around the flow
        lock = workdir_lock.WorkdirLock(workdir, command="limited " + stage)
        lock.acquire()
        try:
            with stage_timeout.reported("pipeline", verbose=False):
                try:
                    with stage_timeout.hard_exit_on_hang(lambda err: (fault_state.mark_stopped(lock.info, err),
                                                                      lock.release())):
                        limited(stage)
                except BaseException as e:
                    fault_state.mark_stopped(lock.info, e)
                    raise
                finally:
                    lock.release()
        except SystemExit as e:
            print(json.dumps({"exit": e.code, "t": time.monotonic()}), flush=True)

    from seqflow.deploy import run_lock

    @flow(name="scheduled")
    def scheduled(cfgs):  # what the deployment's `pipeline` flow does: the lock, then the stages
        with run_lock(cfgs):
            stages("package")

    pipeline("train")
    pipeline("version")
    print(json.dumps({"attempts": len(attempts)}), flush=True)
    scheduled([{"workdir": workdir, "flow": {**cfg["flow"], "lock_wait_s": 0}}])  # no seqflow pipeline around it
    print(json.dumps({"exit": "returned"}), flush=True)
""")


def _state(tmp: Path, run_id: str, flow_run_id: str) -> tuple[str, str, str]:
    """MLflow run status, Prefect flow run state type and its task runs' state names, read from the
    stores' own SQLite files (the Prefect server that wrote them is gone with its process)."""
    import sqlite3

    import mlflow

    with sqlite3.connect(tmp / ".prefect" / "prefect.db") as db:
        (flow_state,) = db.execute("select state_type from flow_run where id = ?", (flow_run_id,)).fetchone()
        tasks = [r[0] for r in db.execute("select state_name from task_run where flow_run_id = ?", (flow_run_id,))]
    status = mlflow.MlflowClient(f"sqlite:///{tmp}/w/mlflow.db").get_run(run_id).info.status
    return status, flow_state, ",".join(tasks)


def _env(tmp: Path) -> dict:
    return {**os.environ, "PREFECT_HOME": str(tmp / ".prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}


def test_a_stage_past_its_limit_fails_the_flow_and_a_hung_one_ends_the_process(tmp_path: Path) -> None:
    workdir = tmp_path / "w"
    workdir.mkdir()
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(workdir)], capture_output=True, text=True,
                          env=_env(tmp_path), timeout=300)
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    assert len(lines) == 6, (proc.returncode, proc.stdout[-2000:], proc.stderr[-4000:])
    started, ended, _, retried, attempts, hung = lines

    # Python stage: interrupted at its limit; the flow fails with the one line, exit 124
    assert ended["exit"] == 124
    assert ended["t"] - started["t"] < 1.5 + 20, ended["t"] - started["t"]
    assert "seqflow pipeline: stage 'train' exceeded flow.timeouts.train=1.5 s (stopped after" in proc.stderr
    status, flow_state, task_states = _state(tmp_path, started["run_id"], started["flow_run_id"])
    assert (status, flow_state, task_states) == ("FAILED", "FAILED", "TimedOut")

    # a timed-out stage is not retried (the version stage's retries are for transient errors)
    assert retried["exit"] == 124 and attempts == {"attempts": 1}

    # a stage that never sees the interrupt, in a scheduled run: the process ends after the grace,
    # same true state (before run_lock installed the hard end: blocked for the stage's 120 s, exit 1)
    assert proc.returncode == 124, proc.stderr[-4000:]
    assert "seqflow pipeline: stage 'package' exceeded flow.timeouts.package=1 s" in proc.stderr
    assert "process ended" in proc.stderr
    status, flow_state, _ = _state(tmp_path, hung["run_id"], hung["flow_run_id"])
    assert (status, flow_state) == ("FAILED", "FAILED")
    assert not (workdir / ".seqflow.lock").exists()
    assert len([x for x in proc.stderr.splitlines() if x.startswith("seqflow pipeline:")]) == 3  # one per case
    print(f"both cases in {time.monotonic() - t0:.1f} s; train stage to the flow's end "
          f"{ended['t'] - started['t']:.1f} s")

