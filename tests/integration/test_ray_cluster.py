"""Training on an existing two-node Ray cluster: a head (``ray start --head``) and a second node
joined with ``ray start --address``, both on this machine with their own temp dirs and ports and
one CPU each, so the two DDP ranks must run on two different Ray nodes. ``seqflow pipeline
ray.address=auto`` (RAY_ADDRESS in the subprocess only) trains across them; the MLflow run says
which node each rank ran on, checked against the node ids the cluster itself reports.

The cluster is stopped by signalling the processes of the two sessions this test started (what
``ray stop`` does, scoped): ``ray stop`` itself would kill every Ray process on the machine,
other tests' local Ray included.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from seqflow.errors import ConfigError
from seqflow.train.launcher import (TAG_NUM_NODES, TAG_PLACEMENT, TAG_RANK_NODES, check_ray_config,
                                    local_checkpoint_dir, rank_placement_tags)

RAY = str(Path(sys.executable).with_name("ray"))
START_TIMEOUT_S = 120     # a loaded 2-core box starts a Ray node in 5-30 s

# Run with the cluster's env: wait until both nodes are alive, print their ids (head first).
PROBE = """
import json, sys, time, ray
ray.init(address=sys.argv[1], include_dashboard=False, log_to_driver=False, logging_level="ERROR")
deadline = time.time() + float(sys.argv[2])
while True:
    alive = [n for n in ray.nodes() if n["Alive"]]
    if len(alive) >= 2 or time.time() > deadline:
        break
    time.sleep(0.5)
head = [n["NodeID"] for n in alive if "node:__internal_head__" in n["Resources"]]
print(json.dumps({"head": head, "all": [n["NodeID"] for n in alive]}))
ray.shutdown()
"""


# init_ray on a config naming a cluster address; exit 3 and one line for a RayClusterError.
JOIN = """
import sys
from omegaconf import OmegaConf
from seqflow.train.launcher import RayClusterError, init_ray
cfg = OmegaConf.create({"ray": {"address": sys.argv[1], "num_cpus": None, "num_workers": 2, "cpus_per_worker": 1,
                                "use_gpu": False}})
try:
    init_ray(cfg)
except RayClusterError as e:
    print(f"RayClusterError: {e}")
    sys.exit(3)
"""


# ray_session on a local Ray: disconnects what it started, leaves a Ray its caller started alone.
SESSIONS = """
import ray
from omegaconf import OmegaConf
from seqflow.train.launcher import ray_session
cfg = OmegaConf.create({"ray": {"address": None, "num_cpus": 1, "num_workers": 1, "cpus_per_worker": 1,
                                "use_gpu": False}})
for i in range(2):   # e.g. two training rounds in one flow run: a fresh local Ray each time
    with ray_session(cfg):
        print("answer", ray.get(ray.remote(lambda: 41 + i).remote()))
    print("after own session", ray.is_initialized())
ray.init(address="local", num_cpus=1, include_dashboard=False)
with ray_session(cfg):
    pass
print("after caller's Ray", ray.is_initialized())
ray.shutdown()
"""


def _free_port() -> int:
    """A TCP port free on every interface (Ray's servers listen on all of them)."""
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _node_ports() -> list[str]:
    """Ports of one node: free ones for the servers whose defaults are fixed numbers (dashboard
    agent 52365, metrics export); 0 (the OS picks when binding: no collision possible) for the rest."""
    return [f"--dashboard-agent-listen-port={_free_port()}", f"--metrics-export-port={_free_port()}",
            "--node-manager-port=0", "--object-manager-port=0", "--runtime-env-agent-port=0",
            "--dashboard-agent-grpc-port=0"]


def _session_pids(sid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == sid:
                    pids.append(int(entry))
            except OSError:
                pass
    return pids


def _left_in_session(proc: subprocess.Popen) -> list[int]:
    """Live processes of ``proc``'s session (``proc`` itself reaped first, so no zombie counts)."""
    proc.poll()
    return [pid for pid in _session_pids(proc.pid) if not (pid == proc.pid and proc.returncode is not None)]


def _program(pid: int) -> str:
    try:
        return Path(Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()).name
    except OSError:
        return ""


def _stop_session(proc: subprocess.Popen, grace_s: float = 20.0) -> None:
    """What ``ray stop`` does, for ``proc``'s session only: SIGTERM every process in it, SIGKILL
    whatever is left after ``grace_s`` (named on stderr)."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        for pid in _left_in_session(proc):
            try:
                if sig == signal.SIGKILL:
                    print(f"killing leftover process {pid} ({_program(pid)})", file=sys.stderr)
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.time() + wait_s
        while time.time() < deadline and _left_in_session(proc):
            time.sleep(0.2)


class LoopbackCluster:
    """Head + one joined node on this machine, one CPU each, own temp dirs (short: Ray's socket
    paths must stay under 108 bytes) and ports, token auth with a token of their own (not
    ``~/.ray/auth_token``). Each node is a ``ray start --block`` in a session of its own, which
    :meth:`stop` ends."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="sfray-", dir="/tmp"))
        self.env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        # no 30-s drain on SIGTERM (Ray's default for `ray start --block`): teardown is immediate
        self.env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16), RAY_TRAIN_V2_ENABLED="1",
                        RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0")
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.procs: dict[str, subprocess.Popen] = {}
        self.head_node = self.worker_node = ""

    def _start(self, name: str, args: list[str]) -> None:
        log = (self.root / f"{name}.log").open("w")
        cmd = [RAY, "start", "--block", "--num-cpus=1", "--node-ip-address=127.0.0.1", "--disable-usage-stats",
               f"--temp-dir={self.root / name}", *_node_ports(), *args]
        self.procs[name] = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def _wait_started(self, name: str) -> None:
        """Until ``ray start`` wrote its address file (after its node registered with the GCS)."""
        proc, log, deadline = self.procs[name], self.root / f"{name}.log", time.time() + START_TIMEOUT_S
        while not (self.root / name / "ray_current_cluster").exists():
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"ray start ({name}) exited {proc.returncode} or took over {START_TIMEOUT_S} s:\n"
                            f"{log.read_text()[-3000:]}")
            time.sleep(0.3)

    def start(self) -> None:
        """Start the head, wait for it, start the second node, wait for both to be alive and read
        their node ids from the cluster (Ray's public API, in a subprocess)."""
        self._start("head", ["--head", f"--port={self.port}", "--include-dashboard=false",
                             f"--dashboard-port={_free_port()}"])
        self._wait_started("head")
        self._start("worker", [f"--address={self.address}"])
        self._wait_started("worker")
        probe = subprocess.run([sys.executable, "-c", PROBE, self.address, str(START_TIMEOUT_S)], env=self.env,
                               capture_output=True, text=True, timeout=START_TIMEOUT_S + 60)
        assert probe.returncode == 0, probe.stderr[-3000:]
        nodes = json.loads(probe.stdout.strip().splitlines()[-1])
        assert len(nodes["all"]) == 2 and len(nodes["head"]) == 1, nodes
        self.head_node = nodes["head"][0]
        self.worker_node = next(n for n in nodes["all"] if n != self.head_node)

    def programs(self, name: str) -> set[str]:
        """Executable names (``raylet``, ``gcs_server``, ...) alive in node ``name``'s session."""
        return {_program(pid) for pid in _left_in_session(self.procs[name])}

    def stop(self) -> None:
        for name in ("worker", "head"):
            if name in self.procs:
                _stop_session(self.procs[name])
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def loopback_cluster():
    """A :class:`LoopbackCluster`, not started yet; stopped at teardown whatever happened."""
    cluster = LoopbackCluster()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.mark.slow
def test_train_stage_limit_ends_a_blocked_ray_train_run_on_a_joined_cluster(loopback_cluster: LoopbackCluster,
                                                                            tmp_path: Path) -> None:
    """The train stage's abort on a joined cluster, whose Ray Train processes run under the nodes'
    raylets, not under the driver: this job's controller and worker on the driver's node are found
    in the actor table and killed, the rank on the other node dies with its owner (the
    controller), and the stage ends within seconds of its deadline (before: the ranks' 600 s)."""
    from test_stage_timeout_ray import SCRIPT

    cluster = loopback_cluster
    cluster.start()
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), cluster.address], capture_output=True,
                          text=True, timeout=400, env=cluster.env)
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    result = lines[-1]
    assert result["error"] == "StageTimeoutError", result
    assert "Ray Train run aborted: " in result["message"] and " worker process(es) killed" in result["message"]
    assert result["ended_after_expiry_s"] < 30, result
    assert result["ranks_alive"] == [] and result["children"] == [], result
    assert cluster.programs("head") >= {"raylet", "gcs_server"}  # the cluster itself keeps running
    print(result["message"], f"; ended {result['ended_after_expiry_s']} s after the deadline")


@pytest.mark.slow
def test_pipeline_spreads_ranks_over_two_nodes(loopback_cluster: LoopbackCluster, project: Path,
                                               tiny_overrides) -> None:
    from conftest import project_env

    cluster = loopback_cluster
    storage = cluster.root / "shared-storage"   # the path both nodes see (a shared mount or s3:// on a real cluster)
    env = {**project_env(project), **{k: cluster.env[k] for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")},
           "RAY_ADDRESS": cluster.address}
    cmd = [str(Path(sys.executable).with_name("seqflow")), "pipeline", *tiny_overrides, "model=trigger_word",
           "ray.address=auto", "ray.placement_strategy=SPREAD", f"ray.storage_path={storage}"]
    # The pipeline needs the cluster only at its train stage: start both side by side.
    log = project.parent / "pipeline.log"
    with log.open("w") as f:
        pipeline = subprocess.Popen(cmd, cwd=project, env=env, stdout=f, stderr=subprocess.STDOUT,
                                    start_new_session=True)
    try:
        cluster.start()
        pipeline.wait(timeout=600)
    finally:
        _stop_session(pipeline, grace_s=10.0)   # nothing left after a normal exit
    out = log.read_text()
    assert pipeline.returncode == 0, out[-6000:]
    assert f"joining Ray cluster at {cluster.address}" in out

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project}/mlflow.db")
    exp = client.get_experiment_by_name("seqflow/trigger_word")
    (run,) = client.search_runs([exp.experiment_id])
    tags = run.data.tags
    rank_nodes = json.loads(tags[TAG_RANK_NODES])
    # the two ranks ran on the two nodes of this cluster, one each
    assert sorted(rank_nodes) == sorted([cluster.head_node, cluster.worker_node]), (rank_nodes, cluster.head_node)
    assert tags[TAG_NUM_NODES] == "2" and tags[TAG_PLACEMENT] == "SPREAD"
    assert f"Ray node {cluster.worker_node}" in out and f"Ray node {cluster.head_node}" in out
    # both ranks trained (equal shares), the checkpoints are on the shared storage path, and the
    # best one became the registered model
    assert run.data.metrics["train/samples_rank0"] == run.data.metrics["train/samples_rank1"] > 0
    # (the Ray run is named <model>-<data version>-<config hash>, so a re-run resumes from it)
    assert list(storage.glob("trigger_word-*/checkpoint_*/checkpoint.ckpt"))
    mv = client.get_model_version_by_alias("seqflow-trigger-word-activate", "champion")
    assert mv.run_id == run.info.run_id
    # seqflow disconnected without stopping the cluster: both raylets and the head's GCS still run
    assert {"gcs_server", "raylet"} <= cluster.programs("head") and "raylet" in cluster.programs("worker")


def _ray_cfg(**ray):
    base = dict(address=None, num_workers=2, use_gpu=False, cpus_per_worker=1, max_failures=1, num_cpus=None,
                placement_strategy="PACK", storage_path="/tmp/x")
    return OmegaConf.create({"ray": {**base, **ray}})


@pytest.mark.parametrize("bad, message", [
    ({"placement_strategy": "ROUND_ROBIN"}, "ray.placement_strategy='ROUND_ROBIN': must be one of PACK, SPREAD"),
    ({"num_workers": 0}, "ray.num_workers=0: must be >= 1"),
    ({"cpus_per_worker": 0}, "ray.cpus_per_worker=0: must be > 0"),
    ({"storage_path": ""}, "ray.storage_path is empty"),
])
def test_bad_ray_settings_are_one_line_config_errors(bad, message) -> None:
    with pytest.raises(ConfigError) as e:
        check_ray_config(_ray_cfg(**bad))
    assert str(e.value).startswith(message) and "\n" not in str(e.value)
    check_ray_config(_ray_cfg(placement_strategy="STRICT_SPREAD"))


def test_placement_tags_by_rank() -> None:
    placement = [{"rank": 1, "node_id": "b" * 56}, {"rank": 0, "node_id": "a" * 56}, {"rank": 2, "node_id": "a" * 56}]
    tags = rank_placement_tags(placement, "SPREAD")
    assert json.loads(tags[TAG_RANK_NODES]) == ["a" * 56, "b" * 56, "a" * 56]
    assert tags[TAG_NUM_NODES] == "2" and tags[TAG_PLACEMENT] == "SPREAD"
    many = [{"rank": r, "node_id": f"{r:056x}"} for r in range(200)]   # past MLflow's tag length
    short = json.loads(rank_placement_tags(many, "PACK")[TAG_RANK_NODES])
    assert len(short) == 200 and short[7] == f"{7:056x}"[:16]


@pytest.mark.slow
def test_ray_session_shuts_down_only_what_it_started(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, "-c", SESSIONS], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(("answer", "after"))]
    assert lines == ["answer 41", "after own session False", "answer 42", "after own session False",
                     "after caller's Ray True"], proc.stdout


def test_nothing_listening_is_a_quick_one_line_error() -> None:
    """An address where no cluster runs fails in seconds (Ray alone retries for minutes), naming the fix."""
    from seqflow.train.launcher import RayClusterError, check_reachable

    address = f"127.0.0.1:{_free_port()}"
    t0 = time.time()
    with pytest.raises(RayClusterError) as e:
        check_reachable(address)
    assert time.time() - t0 < 10
    assert str(e.value).startswith(f"cannot join Ray cluster at {address}: nothing answers there")
    assert "\n" not in str(e.value) and "ray start --head" in str(e.value)
    check_reachable("auto")   # left to Ray: RAY_ADDRESS or the latest local cluster


def test_remote_checkpoint_is_downloaded(tmp_path: Path) -> None:
    """A checkpoint on a non-local pyarrow filesystem (here a sub-tree filesystem, as s3:// would
    be) is copied to a local folder once; a local one is used in place."""
    import pyarrow.fs
    from ray.train import Checkpoint

    src = tmp_path / "bucket" / "run" / "checkpoint_000001"
    src.mkdir(parents=True)
    (src / "checkpoint.ckpt").write_bytes(b"weights")
    remote = Checkpoint("run/checkpoint_000001",
                        filesystem=pyarrow.fs.SubTreeFileSystem(str(tmp_path / "bucket"), pyarrow.fs.LocalFileSystem()))
    dest = tmp_path / "local" / "checkpoint_000001"
    assert local_checkpoint_dir(remote, dest) == dest
    assert (dest / "checkpoint.ckpt").read_bytes() == b"weights"
    (src / "checkpoint.ckpt").write_bytes(b"changed")   # complete copies are reused, not fetched again
    assert (local_checkpoint_dir(remote, dest) / "checkpoint.ckpt").read_bytes() == b"weights"
    assert local_checkpoint_dir(Checkpoint(str(src)), tmp_path / "unused") == src
