"""The train stage's limit ends a real Ray Train run whose ranks are blocked in C (``time.sleep``
in every worker, the driver waiting in ``ray.get`` inside ``trainer.fit()``): the stage raises
StageTimeoutError within seconds, and no Ray Train controller or worker process is left, nor any
process of the local Ray the stage started.

The deadline is reached with ``expire()`` (the watchdog's own expiry path) once both ranks run,
so the test does not depend on how long Ray takes to start on a loaded box. The same script on a
joined two-node cluster: tests/integration/test_ray_cluster.py."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent("""
    import json, os, sys, threading, time
    from pathlib import Path
    from omegaconf import OmegaConf

    out = Path(sys.argv[1])

    def loop(config):
        import time as t
        from pathlib import Path as P
        import ray.train
        P(config["out"], f"rank{ray.train.get_context().get_world_rank()}").write_text(str(os.getpid()))
        t.sleep(600)  # blocked in C: no bytecode runs in the rank, the driver waits in ray.get

    def stage():
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer
        from seqflow.train.launcher import ray_session
        address = sys.argv[2] if len(sys.argv) > 2 else None  # a joined cluster's, or the local Ray
        cfg = OmegaConf.create({"ray": {"address": address, "num_cpus": None if address else 2, "num_workers": 2,
                                        "cpus_per_worker": 1, "use_gpu": False, "worker_group_timeout_s": 120}})
        with ray_session(cfg):
            TorchTrainer(loop, train_loop_config={"out": str(out)},
                         scaling_config=ScalingConfig(num_workers=2, use_gpu=False),
                         run_config=RunConfig(name="hang", storage_path=str(out / "ray"))).fit()

    from seqflow import stage_timeout
    from seqflow.train.abort import abort_ray_train, ray_train_processes
    expired = {}

    def expire_when_both_ranks_run():
        while len(list(out.glob("rank*"))) < 2:
            time.sleep(0.2)
        time.sleep(1.0)
        expired["t"] = time.monotonic()
        stage_timeout.running_stages()["train"].expire()

    threading.Thread(target=expire_when_both_ranks_run, daemon=True).start()
    try:
        stage_timeout.run_limited("train", 600.0, 60.0, stage, abort=abort_ray_train)
        result = {"error": None}
    except BaseException as e:
        result = {"error": type(e).__name__, "message": str(e)}
    import psutil
    ranks = [int(p.read_text()) for p in out.glob("rank*")]
    time.sleep(1.0)
    result.update(ended_after_expiry_s=round(time.monotonic() - expired["t"], 1),
                  ranks_alive=[pid for pid in ranks if psutil.pid_exists(pid)],
                  train_procs=[p.pid for p in ray_train_processes()],
                  children=[" ".join(p.cmdline())[:80] for p in psutil.Process().children(recursive=True)])
    print(json.dumps(result), flush=True)
""")


@pytest.mark.slow
def test_train_stage_limit_ends_a_blocked_ray_train_run_and_leaves_no_worker(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True,
                          timeout=400, env={**__import__("os").environ, "RAY_TRAIN_V2_ENABLED": "1"})
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    result = lines[-1]
    assert result["error"] == "StageTimeoutError", result
    assert result["message"].startswith("stage 'train' exceeded flow.timeouts.train=600 s (stopped after")
    assert "Ray Train run aborted: 2 worker process(es) killed" in result["message"], result
    assert result["ended_after_expiry_s"] < 30, result  # without the abort: 600 s (the ranks' sleep)
    assert result["ranks_alive"] == [] and result["train_procs"] == [], result
    assert result["children"] == [], result  # the local Ray the stage started is shut down too
    print(f"train stage ended {result['ended_after_expiry_s']} s after its deadline")
