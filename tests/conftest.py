"""Shared fixtures: a throw-away project directory (a real git repo) and the tiny config."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from _schedule import isolate_worker, schedule

isolate_worker()  # under pytest-xdist: this worker's own PREFECT_HOME, RAY_TMPDIR, ONNX cache


@pytest.hookimpl(tryfirst=True)  # before xdist reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    schedule(items)


# Small enough for a 2-core CI box, large enough that every stage does real work.
TINY_OVERRIDES = [
    "data.num_voices=8",
    "data.tts_engines=[espeak]",  # Piper has its own tests; the tiny flow stays fast
    "data.voice_split={train: 0.5, val: 0.25, test: 0.25}",
    "data.renders_per_voice=3",
    "data.negatives_per_voice=6",
    "data.num_negatives=12",
    "data.num_confusables=4",
    "data.hard_negatives={partials: 1, phoneme_edits: 1, rhymes: 1}",
    "data.num_sentences=24",
    "data.background_seconds=8.0",
    "data.backgrounds_per_kind={train: 1, val: 1, test: 1}",
    "clips.duration=4.0",
    "clips.train_clips=48",
    "clips.val_clips=16",
    "clips.test_clips=16",
    "shards.target_bytes=200000",
    "shards.min_shards=2",
    "model.batch_size=8",
    "trainer.max_epochs=1",
    "trainer.log_every_n_steps=1",
    "trainer.num_workers=1",
    "ray.num_workers=2",
    "ray.num_cpus=2",
    "evaluate.heldout_engine.enabled=false",  # festival comes from Debian packages: never downloaded by tests
]


def git_init(path: Path) -> Path:
    """A real git repo with a local identity, as DVC needs."""
    path.mkdir(parents=True, exist_ok=True)
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "t@seqflow.local"],
                ["git", "config", "user.name", "seqflow tests"]):
        subprocess.run(cmd, cwd=path, check=True)
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """An empty project directory (git repo) used as ``SEQFLOW_WORKDIR``."""
    return git_init(tmp_path / "project")


@pytest.fixture
def tiny_overrides() -> list[str]:
    """Hydra overrides for the tiny end-to-end config."""
    return list(TINY_OVERRIDES)


def project_env(project: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(SEQFLOW_WORKDIR=str(project), PREFECT_HOME=str(project / ".prefect"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false", RAY_TRAIN_V2_ENABLED="1",
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",
               MLFLOW_TRACKING_URI=f"sqlite:///{project}/mlflow.db")
    return env


@pytest.fixture
def run_seqflow():
    """Run the installed ``seqflow`` console script in a project, as a user would."""
    import subprocess
    import sys

    def run(project: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
        exe = Path(sys.executable).with_name("seqflow")
        return subprocess.run([str(exe), *args], cwd=project, env=project_env(project),
                              capture_output=True, text=True, timeout=timeout)

    return run


def server_alive(server: dict) -> bool:
    """The process of a lock record's ``prefect_server`` (pid + start time) still runs, not a zombie."""
    import psutil

    try:
        p = psutil.Process(server["pid"])
        return abs(p.create_time() - server["create_time"]) < 1 and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
