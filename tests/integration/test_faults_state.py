"""Faults on the real tiny pipeline (CLI, Prefect ephemeral API, MLflow SQLite, Ray Train, DVC):
a second pipeline in the same workdir fails at once naming the holder; a pipeline SIGKILLed
mid-train (driver and Ray) is found by the next run, which stops the temporary Prefect server the
killed run left running, marks its MLflow run KILLED and its Prefect flow run CRASHED, resumes
training from the killed run's last Ray checkpoint and registers one version; a no-op re-run then
reuses every finished stage (≤ 30 s) and registers nothing new."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import project_env, server_alive

from seqflow.lock import read_info

pytestmark = pytest.mark.slow

NOOP_RERUN_LIMIT_S = 30.0


def _overrides(tiny: list[str]) -> list[str]:
    return [o for o in tiny if not o.startswith("trainer.max_epochs=")] + ["trainer.max_epochs=4"]


def _wait(what: str, cond, proc: subprocess.Popen, log: Path, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert proc.poll() is None, f"pipeline exited ({proc.returncode}) before {what}: {log.read_text()[-4000:]}"
        assert time.monotonic() < deadline, f"no {what} after {timeout_s} s: {log.read_text()[-4000:]}"
        time.sleep(1)


def _checkpoints(project: Path) -> list[Path]:
    """Checkpoints the Ray Train controller has registered: it writes its snapshot after a report,
    and a checkpoint folder without one (a kill in between) is rightly not resumed from."""
    if not list((project / "ray_results").glob("*/checkpoint_manager_snapshot.json")):
        return []
    return list((project / "ray_results").glob("*/checkpoint_*/checkpoint.ckpt"))


def _states(project: Path, run_id: str, flow_run_id: str) -> tuple[str, str, list[str]]:
    """(MLflow run status, Prefect flow run state, registered versions) read in a fresh process."""
    code = ("import mlflow; from prefect import get_client\n"
            f"c = mlflow.MlflowClient('sqlite:///{project}/mlflow.db')\n"
            f"print(c.get_run('{run_id}').info.status)\n"
            "print(','.join(sorted(str(v.version) for m in c.search_registered_models() "
            "for v in c.search_model_versions(f\"name = '{m.name}'\"))))\n"
            f"with get_client(sync_client=True) as p: print(p.read_flow_run('{flow_run_id}').state.type.value)\n")
    with open(project / "states.out", "w") as fo, open(project / "states.err", "w") as fe:
        p = subprocess.Popen([sys.executable, "-c", code], stdout=fo, stderr=fe, env=project_env(project),
                             start_new_session=True)
        rc = p.wait(300)
    os.killpg(p.pid, signal.SIGKILL) if _alive_group(p.pid) else None  # Prefect's temporary server
    assert rc == 0, (project / "states.err").read_text()[-3000:]
    status, versions, state = (project / "states.out").read_text().split("\n")[-4:-1]
    return status, state, [v for v in versions.split(",") if v]


def _kill_session_but(sid: int, keep: int) -> None:
    """SIGKILL every process of session ``sid`` but ``keep``: no handler runs; the driver and its
    Ray die at once (Ray's processes share a SIGKILLed driver's fate anyway, but then after it, with
    their own teardown), while Prefect's temporary server, which shares nothing, lives on."""
    import psutil

    for p in psutil.process_iter():
        try:
            if p.pid != keep and os.getsid(p.pid) == sid:
                p.kill()
        except (psutil.Error, OSError):
            pass


def _alive_group(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def test_lock_kill_resume_true_state_and_stage_reuse(project: Path, tiny_overrides, run_seqflow) -> None:
    over = _overrides(tiny_overrides)
    exe = Path(sys.executable).with_name("seqflow")
    log_a = project.parent / "killed.log"
    with open(log_a, "w") as out:
        a = subprocess.Popen([str(exe), "pipeline", *over], cwd=project, env=project_env(project), stdout=out,
                             stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait("workdir lock", lambda: (read_info(project) or {}).get("pid") == a.pid, a, log_a, 120)
        t0 = time.monotonic()
        second = run_seqflow(project, "pipeline", *over, timeout=120)
        second_s = time.monotonic() - t0
        assert second.returncode == 2, second.stderr[-3000:]
        assert f"is locked by pid {a.pid}" in second.stderr and "--wait" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1 and second_s < 30, (second_s, second.stderr)

        _wait("a Ray checkpoint", lambda: _checkpoints(project) and (read_info(project) or {}).get("mlflow_run_ids"),
              a, log_a)
        killed = read_info(project)
        _kill_session_but(a.pid, killed["prefect_server"]["pid"])
        a.wait(60)
    except BaseException:
        if _alive_group(a.pid):
            os.killpg(a.pid, signal.SIGKILL)
        raise
    assert killed["prefect_flow_run_id"] and len(killed["mlflow_run_ids"]) == 1
    server = killed["prefect_server"]
    try:
        assert server_alive(server)  # Prefect's temporary server outlived its parent
        rerun = run_seqflow(project, "pipeline", *over)
        assert not server_alive(server)  # the next run stopped it when it took the lock over
    finally:
        if _alive_group(a.pid):  # whatever else the killed run left in its session
            os.killpg(a.pid, signal.SIGKILL)
    log = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, log[-6000:]
    assert "taking it over" in log and f"pid {a.pid}" in log
    assert f"stopped its temporary Prefect server (pid {server['pid']}" in log
    assert "resuming from" in log, log[-6000:]  # Ray Train resumed the killed run's checkpoint
    status, state, versions = _states(project, killed["mlflow_run_ids"][0], killed["prefect_flow_run_id"])
    assert (status, state, versions) == ("KILLED", "CRASHED", ["1"])
    assert not (project / ".seqflow.lock").exists()

    t0 = time.monotonic()
    noop = run_seqflow(project, "pipeline", *over)
    noop_s = time.monotonic() - t0
    log = noop.stdout + noop.stderr
    assert noop.returncode == 0, log[-6000:]
    assert log.count("Cached(type=COMPLETED)") == 5, log[-6000:]  # shard, train, package, evaluate, register
    print(f"second pipeline refused in {second_s:.1f} s; no-op re-run {noop_s:.1f} s")
    assert noop_s <= NOOP_RERUN_LIMIT_S, log[-4000:]
    run_id = [line for line in log.splitlines() if line.startswith("mlflow_run_id")][-1].split()[-1]
    status, state, versions = _states(project, run_id, killed["prefect_flow_run_id"])
    assert status == "FINISHED" and versions == ["1"]
