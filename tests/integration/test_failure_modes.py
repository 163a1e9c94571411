"""Issue 9 failure modes on real components: a Ray Train run on uneven shards (one corrupt) whose
rank-1 worker is SIGKILLed mid-epoch, and a SIGKILLed ``dvc push`` pushed again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from seqflow.config import load_config
from seqflow.shards.writer import _encode, _finish_index, _Shards

SR = 16000

# Test-only fault injection, as a model family a user could declare (README "Adding a model"):
# the real trigger-word family whose module SIGKILLs its own Ray worker (rank 1) once, mid-epoch.
KILLER_FAMILY = '''
import json, os, signal, time
from dataclasses import replace
from pathlib import Path
from seqflow.families import trigger_word

OUT = Path(os.environ["SEQFLOW_TEST_FAULT_DIR"])
KILL_AT = int(os.environ["SEQFLOW_TEST_KILL_STEP"])
# written by the Ray Train controller once it has registered a reported checkpoint
SNAPSHOT = Path(os.environ["SEQFLOW_TEST_RUN_DIR"]) / "checkpoint_manager_snapshot.json"


def build_module(cfg, net, tokenizer=None):
    module = trigger_word.FAMILY.build_module(cfg, net, tokenizer)
    base = type(module)

    class Killed(base):
        def on_train_start(self):
            (OUT / f"start-rank{self.global_rank}-step{self.trainer.global_step}").touch()

        def on_train_batch_start(self, batch, batch_idx):
            marker = OUT / "killed"
            if self.global_rank == 1 and self.trainer.global_step == KILL_AT and not marker.exists():
                deadline = time.monotonic() + 120  # a checkpoint not yet registered is not resumed from
                while not SNAPSHOT.exists() and time.monotonic() < deadline:
                    time.sleep(0.1)
                marker.touch()
                os.kill(os.getpid(), signal.SIGKILL)

        def on_train_end(self):
            sched = self.trainer.lr_scheduler_configs[0].scheduler
            (OUT / f"end-rank{self.global_rank}.json").write_text(json.dumps({
                "global_step": self.trainer.global_step, "sched_last_epoch": sched.last_epoch,
                "sched_total_steps": sched.total_steps}))

    module.__class__ = Killed
    return module


FAMILY = replace(trigger_word.FAMILY, name="killed_once", build_module=build_module)
'''


def write_split(folder: Path, counts: list[int], split: str, seconds: float = 1.0) -> Path:
    """Real WebDataset tars of trigger-word clips (noise; every other clip holds a positive)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(len(counts))
    shards, i = _Shards(folder), 0
    for c in counts:
        shards.open_next()
        for _ in range(c):
            wav = (0.1 * rng.standard_normal(int(SR * seconds))).astype(np.float32)
            segs = [{"kind": "positive", "start": 0.2, "end": 0.5, "text": "w", "speaker": "s"}] if i % 2 else []
            enc, sec = _encode({"__key__": f"k{i:04d}", "audio": wav, "sample_rate": SR, "txt": "",
                                "json": {"duration": seconds, "segments": segs}}, "flac")
            shards.write(enc, sec)
            i += 1
    shards.close()
    _finish_index(folder, shards.stats, split, "flac", "md5", "hash")
    return folder / "index.json"


@pytest.mark.slow
def test_sigkilled_worker_on_uneven_corrupt_shards_resumes_to_the_same_step_count(tmp_path, monkeypatch):
    """2 Ray ranks, 5 uneven train shards (rank 0: 3 shards / 36 samples, rank 1: 2 / 10) of which
    one is truncated, 2 loader workers per rank and a per-step OneCycle LR schedule; rank 1 is
    SIGKILLed at step 15 (mid-epoch 2). The run resumes from the epoch-1 checkpoint and ends at
    exactly max_epochs x batches per rank steps, with the scheduler stepped exactly that often and
    the lost samples of the corrupt shard in the MLflow run's metrics."""
    import mlflow

    from seqflow.tracking.runs import setup_mlflow
    from seqflow.train.launcher import train_with_ray

    fam_dir, fault = tmp_path / "fam", tmp_path / "fault"
    fam_dir.mkdir()
    fault.mkdir()
    (fam_dir / "killed_once_family.py").write_text(KILLER_FAMILY)
    monkeypatch.setenv("PYTHONPATH", f"{fam_dir}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    monkeypatch.syspath_prepend(str(fam_dir))
    monkeypatch.setenv("SEQFLOW_TEST_FAULT_DIR", str(fault))
    monkeypatch.setenv("SEQFLOW_TEST_KILL_STEP", "15")
    monkeypatch.setenv("SEQFLOW_TEST_RUN_DIR", str(tmp_path / "ray_results" / "killed-once"))
    monkeypatch.setenv("RAY_TRAIN_V2_ENABLED", "1")
    train = write_split(tmp_path / "shards/train", [14, 6, 10, 4, 12], "train")  # 46 -> 10 batches/rank
    damaged = train.parent / "shard-000002.tar"  # rank 0, worker 1: cut inside its 4th sample
    damaged.write_bytes(damaged.read_bytes()[:damaged.stat().st_size // 3])
    val = write_split(tmp_path / "shards/val", [4, 4, 4, 4], "val")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = load_config([f"workdir={tmp_path}", f"tracking.tracking_uri={uri}", "model=trigger_word",
                       "model.family=killed_once_family", "model.net.conv_channels=8", "model.net.gru_hidden=8",
                       "model.net.gru_layers=1", "model.optim.scheduler=onecycle", "model.batch_size=2",
                       "clips.duration=1.0", "trainer.max_epochs=2", "trainer.num_workers=2",
                       "trainer.log_every_n_steps=1", "ray.num_workers=2", "ray.num_cpus=2", "ray.max_failures=1",
                       "tracking.system_metrics.enabled=false"])
    exp = "seqflow-failure-modes"
    setup_mlflow(uri, tmp_path / "mlartifacts", exp)
    run_id = mlflow.MlflowClient().create_run(mlflow.get_experiment_by_name(exp).experiment_id).info.run_id

    result = train_with_ray(cfg, run_id, exp, train, val, run_name="killed-once")

    assert (fault / "killed").exists()  # the fault really happened ...
    starts = sorted(p.name for p in fault.glob("start-*"))  # ... and both ranks resumed from step 10
    assert starts == ["start-rank0-step0", "start-rank0-step10", "start-rank1-step0", "start-rank1-step10"]
    ends = [json.loads((fault / f"end-rank{r}.json").read_text()) for r in (0, 1)]
    assert ends[0] == ends[1] == {"global_step": 20, "sched_last_epoch": 20, "sched_total_steps": 20}
    assert result.metrics["step"] == 20 and result.metrics["epoch"] == 1
    metrics = mlflow.MlflowClient().get_run(run_id).data.metrics
    assert metrics["train/samples_rank0"] == metrics["train/samples_rank1"] == 20  # this attempt: 1 epoch x 10 batches x 2
    lost = metrics["data/lost_samples_train"]  # the truncated tar loses 7 of its 10 samples per pass
    assert lost > 0 and lost % 7 == 0 and metrics["data/lost_samples_val"] == 0


def _dvc(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("dvc")
    return subprocess.run([str(exe), *args], cwd=repo, capture_output=True, text=True, check=check)


@pytest.mark.slow
def test_sigkilled_dvc_push_pushes_clean_on_the_next_version(project: Path):
    """``dvc push`` SIGKILLed after some files reached the remote: seqflow's next
    :func:`version_data` pushes the rest and ``dvc status -c`` is clean."""
    from seqflow.data.dvc import version_data

    data, remote = project / "data", project.parent / "remote"
    rng = np.random.default_rng(0)
    for i in range(800):
        d = data / f"d{i % 30}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.bin").write_bytes(rng.bytes(2048))
    first = version_data(project, remote_url=remote, push=False)
    _dvc(project, "remote", "add", "-d", "-f", "local", str(remote))
    push = subprocess.Popen([str(Path(sys.executable).with_name("dvc")), "push", "-j", "1"], cwd=project,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and sum(1 for _ in remote.rglob("*") if _.is_file()) < 50:
        time.sleep(0.02)
    os.killpg(push.pid, signal.SIGKILL)
    push.wait()
    on_remote = sum(1 for p in remote.rglob("*") if p.is_file())
    assert 50 <= on_remote < 800, on_remote  # killed mid-push
    assert "not_in_remote" in _dvc(project, "status", "-c", "--json").stdout or \
        "new" in _dvc(project, "status", "-c", "--json").stdout

    again = version_data(project, remote_url=remote, push=True)
    assert again.md5 == first.md5 and again.pushed_files > 0
    status = _dvc(project, "status", "-c", "--json")
    assert json.loads(status.stdout or "{}") == {}, status.stdout
