"""``seqflow pipeline`` with a bad config fails at once, before any work: one line on stderr
naming key, value and what is allowed, exit 2, nothing written; the traceback only with
``--verbose`` (issue 9, "fail fast"). Real console script, real Hydra, espeak-ng and filesystem."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from seqflow.schema.resources import machine_cpus

CASES = [
    ("trainer.max_epochs=abc", "seqflow pipeline: trainer.max_epochs='abc': must be an integer >= 1"),
    ("trainer.max_epochs=-1", "seqflow pipeline: trainer.max_epochs=-1: must be an integer >= 1"),
    (f"ray.num_workers={machine_cpus() + 6}",
     f"seqflow pipeline: ray.num_workers={machine_cpus() + 6} x ray.cpus_per_worker=1: needs {machine_cpus() + 6} "
     "CPUs, but local Ray has"),
    ("data.trigger_word='привет'",
     "seqflow pipeline: data.trigger_word='привет': the configured voices espeak en-us"),
    ("clips.train_clips=1000000000", "seqflow pipeline: not enough disk space at "),
    ("data.no_such_key=1", "seqflow pipeline: Could not override 'data.no_such_key'."),
]


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("override, start", CASES, ids=[c[0].split("=")[0] for c in CASES])
def test_bad_config_is_one_line_and_exit_2_before_any_work(project: Path, run_seqflow, override: str,
                                                           start: str) -> None:
    t0 = time.perf_counter()
    res = run_seqflow(project, "pipeline", override, timeout=120)
    wall = time.perf_counter() - t0
    assert res.returncode == 2, res.stderr[-2000:]
    assert len(_lines(res.stderr)) == 1 and res.stderr.startswith(start), res.stderr[-2000:]
    assert "Traceback" not in res.stdout + res.stderr and "prefect" not in (res.stdout + res.stderr).lower()
    assert not (project / "data").exists() and not (project / "mlflow.db").exists()  # nothing was started
    assert wall < 30, f"{wall:.1f} s"  # ~2 s on an idle 2-core box (5 s is the goal); the bound allows a loaded CI


def test_verbose_shows_the_traceback_then_the_line(project: Path, run_seqflow) -> None:
    res = run_seqflow(project, "--verbose", "pipeline", "trainer.max_epochs=-1", timeout=120)
    assert res.returncode == 2
    assert "Traceback (most recent call last)" in res.stderr and "check_schema" in res.stderr
    assert _lines(res.stderr)[-1] == "seqflow pipeline: trainer.max_epochs=-1: must be an integer >= 1"


def test_prepare_reports_the_same_line(project: Path, run_seqflow) -> None:
    res = run_seqflow(project, "prepare", "augment.train.clip.reverb.p=1.5", timeout=120)
    assert res.returncode == 2
    assert _lines(res.stderr) == ["seqflow prepare: augment.train.clip.reverb.p=1.5: must be a number >= 0 and <= 1"]
