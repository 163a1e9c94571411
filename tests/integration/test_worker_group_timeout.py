"""A worker group whose resources never appear fails after ``ray.worker_group_timeout_s`` with one
error naming what is missing, instead of Ray Train V2 retrying the start forever (issue 9). Real
local Ray (1 CPU) asked for 2 workers x 1 CPU, as a joined cluster short of nodes would be; run in a
subprocess so the test process never holds a Ray connection."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = r'''
import os, sys, time
from omegaconf import OmegaConf
from ray.train import FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from seqflow.train.group_wait import TIMEOUT_ENV, WorkerGroupTimeoutError, bounded_group_wait, failure_limits
from seqflow.train.launcher import ray_session

cfg = OmegaConf.create({"ray": {"address": None, "num_cpus": 1, "num_workers": 2, "cpus_per_worker": 1,
                                "use_gpu": False, "worker_group_timeout_s": 3}})

def loop(config):
    pass

t0 = time.perf_counter()
try:
    with ray_session(cfg), bounded_group_wait(cfg):
        TorchTrainer(loop, scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
                     run_config=RunConfig(name="wg", storage_path=sys.argv[1], failure_config=FailureConfig(
                         max_failures=0, **failure_limits(cfg)))).fit()
    print("RESULT fit returned")
except WorkerGroupTimeoutError as e:
    print(f"RESULT {time.perf_counter() - t0:.1f} {TIMEOUT_ENV in os.environ} {e}")
'''


@pytest.mark.slow
def test_worker_group_wait_is_bounded_and_names_what_is_missing(tmp_path: Path) -> None:
    env = {**os.environ, "RAY_TRAIN_V2_ENABLED": "1"}
    env.pop("RAY_ADDRESS", None)
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "ray")], capture_output=True, text=True,
                         env=env, timeout=240)
    wall = time.perf_counter() - t0
    result = [line for line in res.stdout.splitlines() if line.startswith("RESULT ")]
    assert res.returncode == 0 and result, res.stderr[-3000:]
    _, seconds, env_left, message = result[0].split(" ", 3)
    assert message == ("Ray Train could not start its worker group within ray.worker_group_timeout_s=3: 2 worker(s) "
                       "x 1 CPU need 2 CPU / 0 GPU; the cluster has 1 CPU / 0 GPU, 1 CPU / 0 GPU free: missing 1 CPU; "
                       "add nodes, lower ray.num_workers / ray.cpus_per_worker, or raise ray.worker_group_timeout_s "
                       "(an autoscaler may need minutes)")
    assert env_left == "False"  # the timeout variable is restored after the block
    assert float(seconds) < 120 and wall < 200  # ~25 s on a loaded 2-core box, most of it Ray start-up
