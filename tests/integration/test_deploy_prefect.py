"""Scheduled runs on a real Prefect server: `prefect server start` in a subprocess, `seqflow deploy`
serving the pipeline on a short interval; a scheduled run of the real (tiny) flow completes, the
deployment never runs two at once, and the run publishes its summary artifact linked to MLflow."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import httpx
import psutil
import pytest

from conftest import TINY_OVERRIDES, project_env
from seqflow.lock import read_info

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
INTERVAL_S = 8
DEPLOYMENT = "seqflow-scheduled-test"
# The cheapest config that runs every stage of the real flow: the log-mel model, one rank, few clips,
# no clip augmentation (the end-to-end pipeline test covers those).
CHEAP = ["model=trigger_word", "augment.enabled=false", "clips.train_clips=16", "clips.val_clips=8",
         "clips.test_clips=8", "ray.num_workers=1"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 4000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else ""


def _stop(proc: subprocess.Popen, grace_s: float = 20.0) -> None:
    """SIGTERM the process, then SIGKILL it and every descendant still alive (flow-run
    subprocesses, Ray) after ``grace_s``."""
    try:
        tree = [psutil.Process(proc.pid)] + psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
    for p in tree:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(tree, timeout=10)
    if proc.poll() is None:
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory) -> str:
    """A real `prefect server start` on 127.0.0.1:<free port> with its own PREFECT_HOME; yields
    its API URL once /api/health answers (120 s allowed under load)."""
    home = tmp_path_factory.mktemp("prefect-server")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_SERVER_UI_ENABLED="false")
    log = home / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"prefect server exited {proc.returncode}:\n{_tail(log)}"
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"prefect server not healthy in 120 s:\n{_tail(log)}"
            time.sleep(0.5)
        yield url
    finally:
        _stop(proc)


@pytest.fixture
def prefect_client(prefect_server):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: prefect_server}):
        with get_client(sync_client=True) as client:
            yield client


def _runs(client, deployment_id):
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId

    return client.read_flow_runs(flow_run_filter=FlowRunFilter(
        deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id])))


def test_served_deployment_runs_the_pipeline_on_schedule(project: Path, prefect_server, prefect_client) -> None:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterId
    from prefect.exceptions import ObjectNotFound

    env = project_env(project)
    env.pop("RAY_ADDRESS", None)
    env.update(PREFECT_API_URL=prefect_server, PREFECT_RUNNER_POLL_FREQUENCY="2")
    log = project / "deploy.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(BIN / "seqflow"), "deploy", *TINY_OVERRIDES, *CHEAP, f"flow.interval={INTERVAL_S}",
                                 f"flow.deployment_name={DEPLOYMENT}"],
                                cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 600  # normally ~100 s; a loaded box is slower
        deployment = None
        running_at_once, states_seen, done = 0, Counter(), None
        lock_holders: set = set()
        while done is None:
            assert proc.poll() is None, f"seqflow deploy exited {proc.returncode}:\n{_tail(log)}"
            assert time.monotonic() < deadline, f"no scheduled run completed in 600 s:\n{_tail(log)}"
            time.sleep(2)
            if deployment is None:
                try:
                    deployment = prefect_client.read_deployment_by_name(f"pipeline/{DEPLOYMENT}")
                except ObjectNotFound:
                    continue
            runs = _runs(prefect_client, deployment.id)
            holder = read_info(project)  # the workdir lock, taken by the running flow run
            lock_holders.add(holder["command"] if holder else None)
            states_seen.update(r.state_name for r in runs)
            running_at_once = max(running_at_once, sum(r.state_type.value == "RUNNING" for r in runs))
            bad = [r for r in runs if r.state_type.value in ("FAILED", "CRASHED")]
            assert not bad, f"run {bad[0].name} {bad[0].state_name}: {bad[0].state.message}\n{_tail(log)}"
            done = next((r for r in runs if r.state_type.value == "COMPLETED"), None)

        # the deployment as the server holds it: the interval schedule, a concurrency limit of 1
        assert deployment.global_concurrency_limit.limit == 1
        assert deployment.concurrency_options.collision_strategy.value == "ENQUEUE"
        assert [s.schedule.interval for s in deployment.schedules] == [timedelta(seconds=INTERVAL_S)]
        assert deployment.entrypoint == "seqflow.flow.pipeline"

        # its runs held the workdir lock, named in the record as the deployment's flow runs
        assert any(c and f"of flow pipeline (deployment pipeline/{DEPLOYMENT}; flow run id " in c
                   for c in lock_holders), lock_holders
        # the completed run was created by the schedule, not by hand
        assert done.auto_scheduled and done.created_by.type == "SCHEDULE"
        # never two at once: runs due while it ran waited for the slot instead of starting
        assert running_at_once == 1, states_seen
        assert states_seen["AwaitingConcurrencySlot"] > 0, states_seen
        started = sorted((r.start_time, r.end_time) for r in _runs(prefect_client, deployment.id) if r.start_time)
        for (_, end), (next_start, _) in zip(started, started[1:]):
            assert end is not None and end <= next_start, started

        # the run's markdown artifact: the summary table and the MLflow run it describes
        arts = prefect_client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["seqflow-summary"])),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[done.id])))
        assert len(arts) == 1 and arts[0].type == "markdown"
        md = arts[0].data

        import mlflow

        client = mlflow.MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
        mv = client.get_model_version_by_alias("seqflow-trigger-word-activate", "champion")
        exp_id = client.get_run(mv.run_id).info.experiment_id
        assert f"| mlflow_run_id | {mv.run_id} |" in md
        assert f"| registered_model | seqflow-trigger-word-activate |" in md
        assert "| test/frr | " in md and "| val/threshold | " in md
        assert f"MLflow run `{mv.run_id}`, experiment `{exp_id}`" in md  # sqlite store: id + `seqflow ui` hint
        assert f"http://127.0.0.1:5000/#/experiments/{exp_id}/runs/{mv.run_id}" in md
    finally:
        _stop(proc)


def test_work_pool_registration(project: Path, prefect_server, prefect_client, monkeypatch) -> None:
    """`seqflow deploy --work-pool` registers the same deployment to a process work pool (for a
    `prefect worker`); a pool that does not exist is a one-line error. In-process: no run fires."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from seqflow.deploy import DeployError, register
    from seqflow.flow import compose_configs

    monkeypatch.setenv("SEQFLOW_WORKDIR", str(project))
    cfgs = compose_configs([*TINY_OVERRIDES, "model=trigger_word", "flow.deployment_name=seqflow-pool-test"])
    prefect_client.create_work_pool(WorkPoolCreate(name="seqflow-test-pool", type="process"))
    with temporary_settings({PREFECT_API_URL: prefect_server}):
        with pytest.raises(DeployError, match="Could not find work pool 'no-such-pool'"):
            register(cfgs, "no-such-pool")
        register(cfgs, "seqflow-test-pool")
    dep = prefect_client.read_deployment_by_name("pipeline/seqflow-pool-test")
    assert dep.work_pool_name == "seqflow-test-pool"
    assert dep.global_concurrency_limit.limit == 1
    assert [s.schedule.cron for s in dep.schedules] == ["0 3 * * *"]
    assert dep.parameters["cfgs"][0]["workdir"] == str(project)
