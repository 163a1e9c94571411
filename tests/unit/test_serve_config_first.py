"""``seqflow serve`` reports a bad config override first — one line, exit 2,
before any MLflow call — even when the model URI names nothing that exists (issue 9: a model lookup
on a store is slow, and its error hid the config's). "No MLflow call" is checked on the store
itself: the SQLite file the tracking URI names is never created."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from seqflow.cli import app

MISSING = "models:/no-such-model@champion"


@pytest.mark.parametrize("override, key", [("trainer.max_epochs=abc", "trainer.max_epochs"),
                                           ("serve.port=abc", "serve.port"),
                                           ("serve.poll_interval_s=-1", "serve.poll_interval_s")])
def test_serve_bad_override_before_model(tmp_path: Path, monkeypatch, override: str, key: str) -> None:
    store = tmp_path / "mlflow.db"
    monkeypatch.setenv("SEQFLOW_WORKDIR", str(tmp_path))
    t0 = time.perf_counter()
    res = CliRunner().invoke(app, ["serve", "--model", MISSING, "--tracking-uri", f"sqlite:///{store}", override])
    elapsed = time.perf_counter() - t0
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert lines[0].startswith("seqflow serve: ") and key in lines[0] and "no-such-model" not in lines[0]
    assert not store.exists() and elapsed < 30, elapsed   # no MLflow call


def test_serve_bad_port_option_before_model(tmp_path: Path, monkeypatch) -> None:
    store = tmp_path / "mlflow.db"
    monkeypatch.setenv("SEQFLOW_WORKDIR", str(tmp_path))
    res = CliRunner().invoke(app, ["serve", "--model", MISSING, "--tracking-uri", f"sqlite:///{store}",
                                   "--port", "70000"])
    assert res.exit_code == 2 and "serve.port=70000: must be an integer in [1, 65535]" in res.output, res.output
    assert not store.exists()
