"""True state after faults, on a real Prefect flow (ephemeral API) and a real MLflow SQLite store:
a raising flow → MLflow FAILED / Prefect FAILED; SIGTERM → KILLED / CANCELLED and exit 143 (with
local Ray up: its C++ handler's 3-s abort alarm no longer turns a slow clean-up into 134);
SIGINT → exit 130; a SIGKILLed holder's record → KILLED / CRASHED, and the next holder stops the
temporary Prefect server the dead one left running, also one killed during the server's start-up. Stage caching: same key reused, --no-cache re-runs, a cached
result pointing at a deleted run is not trusted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from conftest import server_alive

SCRIPT = textwrap.dedent("""
    import json, os, signal, sys, time
    import mlflow
    import ray
    from prefect import flow
    from prefect.runtime import flow_run
    from seqflow import fault_state, lock as workdir_lock

    workdir, mode = sys.argv[1], sys.argv[2]
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started as a background job (SIGINT ignored)
    uri = f"sqlite:///{workdir}/mlflow.db"
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("t") or client.get_experiment(client.create_experiment("t"))
    run_id = client.create_run(exp.experiment_id).info.run_id

    @flow(name="faulty")
    def faulty():
        workdir_lock.record(prefect_flow_run_id=flow_run.id, mlflow_tracking_uri=uri, mlflow_run_id=run_id)
        if mode == "sigterm":  # as the train stage: Ray's driver handlers replace seqflow's
            ray.init(num_cpus=1, include_dashboard=False, configure_logging=False)
        try:
            print(json.dumps({"run_id": run_id, "flow_run_id": str(flow_run.id),
                              "server": workdir_lock.active_lock().info["prefect_server"]}), flush=True)
            if mode == "raise":
                raise ValueError("shard index missing")
            for _ in range(900):  # until signalled (the four scripts start side by side, slowly on a busy
                time.sleep(1)     # box); 1-s naps: a signal another thread took is acted on within 1 s
        finally:
            ray.shutdown() if mode == "sigterm" else None

    lock = workdir_lock.WorkdirLock(workdir, command="faulty " + mode)
    with fault_state.stop_on_sigterm():  # as flow.run_pipeline and cli.pipeline do
        lock.acquire()
        try:
            lock.record(prefect_server=fault_state.start_prefect_server())
            faulty()
        except BaseException as e:
            stopped = fault_state.mark_stopped(lock.info, e)
            if stopped is None:
                raise
            # a clean-up longer than the 3-s abort alarm Ray's C++ handler sets on SIGTERM
            time.sleep(3.5 if mode == "sigterm" else 0)
            line, code = fault_state.exit_line(stopped)
        finally:
            lock.release() if mode != "sigkill" else None
    print(line, file=sys.stderr)
    sys.exit(code)
""")


def _env(tmp: Path) -> dict:
    return {**os.environ, "PREFECT_HOME": str(tmp / ".prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}


def _start(tmp: Path, mode: str) -> subprocess.Popen:
    """Run SCRIPT in workdir ``tmp/<mode>`` in its own session (output to files: Prefect's server
    child inherits them)."""
    (tmp / mode).mkdir()
    with open(tmp / f"{mode}.out", "w") as fo, open(tmp / f"{mode}.err", "w") as fe:
        return subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp / mode), mode], stdout=fo, stderr=fe,
                                text=True, env=_env(tmp), start_new_session=True)


def _ids(tmp: Path, mode: str, p: subprocess.Popen) -> dict:
    deadline = time.monotonic() + 300
    while not (tmp / f"{mode}.out").read_text().strip() and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    line = (tmp / f"{mode}.out").read_text().strip()
    assert line.startswith("{"), (tmp / f"{mode}.err").read_text()[-3000:]
    return json.loads(line.splitlines()[0])


def _end(p: subprocess.Popen, sig: int | None = None, group: bool = True) -> int:
    """Send ``sig`` (if any) to the process, wait, then (``group``) end what it left in its session."""
    if sig is not None:
        p.send_signal(sig)
    rc = p.wait(300)
    if group:
        _killpg(p.pid)
    return rc


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


RECOVER_AND_READ = textwrap.dedent("""
    import json, logging, sys
    import mlflow
    from prefect import get_client
    from seqflow import fault_state, lock
    logging.basicConfig(level=logging.INFO)
    tmp, ids = sys.argv[1], json.loads(sys.argv[2])
    l = lock.WorkdirLock(tmp + "/sigkill")
    before = {}
    with get_client(sync_client=True) as c:
        for mode, i in ids.items():
            m = mlflow.MlflowClient(f"sqlite:///{tmp}/{mode}/mlflow.db").get_run(i["run_id"]).info.status
            before[mode] = [m, c.read_flow_run(i["flow_run_id"]).state.type.value]
        fault_state.recover_stale(l.acquire())
        l.release()
        i = ids["sigkill"]
        after = [mlflow.MlflowClient(f"sqlite:///{tmp}/sigkill/mlflow.db").get_run(i["run_id"]).info.status,
                 c.read_flow_run(i["flow_run_id"]).state.type.value]
    print(json.dumps({"before": before, "after": after}))
""")


def test_failed_and_terminated_and_killed_runs_leave_true_state(tmp_path: Path) -> None:
    procs = {mode: _start(tmp_path, mode) for mode in ("raise", "sigterm", "sigint", "sigkill")}
    try:
        ids = {mode: _ids(tmp_path, mode, p) for mode, p in procs.items()}
        assert _end(procs["raise"]) == 1 and "shard index missing" in (tmp_path / "raise.err").read_text()
        for mode, sig, code in (("sigterm", signal.SIGTERM, 143), ("sigint", signal.SIGINT, 130)):
            rc, err = _end(procs[mode], sig), (tmp_path / f"{mode}.err").read_text()
            assert rc == code, err[-3000:]  # 128 + signal, not 134 (SIGABRT) nor 1
            lines = [line for line in err.splitlines() if line.startswith("seqflow pipeline:")]
            assert lines == [f"seqflow pipeline: stopped by {signal.Signals(sig).name}; MLflow run "
                             f"{ids[mode]['run_id']} KILLED, Prefect flow run {ids[mode]['flow_run_id']} CANCELLED"]
            assert "Aborted" not in err and "SIGABRT" not in err
        _end(procs["sigkill"], signal.SIGKILL, group=False)  # the driver only, as the OOM killer does
        server = ids["sigkill"]["server"]
        assert server_alive(server)  # no handler ran: Prefect's temporary server outlives it

        with open(tmp_path / "read.out", "w") as fo, open(tmp_path / "read.err", "w") as fe:
            p = subprocess.Popen([sys.executable, "-c", RECOVER_AND_READ, str(tmp_path),
                                  json.dumps({m: ids[m] for m in ("raise", "sigterm", "sigkill")})], stdout=fo,
                                 stderr=fe, text=True, env=_env(tmp_path), start_new_session=True)
        assert _end(p) == 0, (tmp_path / "read.err").read_text()[-3000:]
        assert not server_alive(server)  # stopped by the next holder of the workdir lock
    finally:
        for p in procs.values():
            _killpg(p.pid)
    got = json.loads((tmp_path / "read.out").read_text().strip().splitlines()[-1])
    assert got["before"] == {"raise": ["FAILED", "FAILED"], "sigterm": ["KILLED", "CANCELLED"],
                             "sigkill": ["RUNNING", "RUNNING"]}  # a SIGKILL leaves RUNNING: no handler ran
    assert got["after"] == ["KILLED", "CRASHED"]  # marked by the next holder of the workdir lock
    log = (tmp_path / "read.err").read_text()
    assert f"pid {procs['sigkill'].pid}" in log and "marked KILLED" in log and "taking it over" in log


KILLED_IN_STARTUP = textwrap.dedent("""
    import os, signal, sys
    from seqflow import fault_state, lock as workdir_lock
    lock = workdir_lock.WorkdirLock(sys.argv[1], command="killed while Prefect's server starts")
    lock.acquire()
    def spawned(server):  # as flow.run_pipeline records it; then the OOM killer strikes at once
        lock.record(prefect_server=server)
        os.kill(os.getpid(), signal.SIGKILL)
    fault_state.start_prefect_server(on_spawn=spawned)
""")


def test_a_kill_during_the_prefect_servers_start_up_leaves_it_recorded_and_the_next_holder_stops_it(
        tmp_path: Path) -> None:
    from seqflow import fault_state
    from seqflow.lock import WorkdirLock, read_info

    p = subprocess.Popen([sys.executable, "-c", KILLED_IN_STARTUP, str(tmp_path)], env=_env(tmp_path),
                         start_new_session=True, stderr=subprocess.PIPE, text=True)
    try:
        assert p.wait(120) == -signal.SIGKILL, p.stderr.read()[-3000:]
        server = read_info(tmp_path)["prefect_server"]
        assert server_alive(server)  # still starting or started, its parent gone
        lock = WorkdirLock(tmp_path)
        fault_state.recover_stale(lock.acquire())
        lock.release()
        assert not server_alive(server)
    finally:
        _killpg(p.pid)
