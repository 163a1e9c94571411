"""``seqflow evaluate`` reports a bad config override first — one line, exit 2, before any MLflow
call — even when the model URI names nothing that exists (issue 9). "No MLflow call" is checked on
the store itself: the SQLite file the tracking URI names is never created."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from seqflow.cli import app

MISSING = "models:/no-such-model@champion"


def test_evaluate_bad_override_before_model(tmp_path: Path, monkeypatch) -> None:
    store = tmp_path / "mlflow.db"
    monkeypatch.setenv("SEQFLOW_WORKDIR", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    t0 = time.perf_counter()
    res = CliRunner().invoke(app, ["evaluate", MISSING, "trainer.max_epochs=abc"])
    elapsed = time.perf_counter() - t0
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert "trainer.max_epochs" in lines[0] and "'abc'" in lines[0] and "no-such-model" not in lines[0]
    assert not store.exists() and elapsed < 30, elapsed


def test_model_overrides_wait_for_the_versions_model() -> None:
    """Without ``model=``, ``model.*`` overrides are checked after the lookup, against the version's
    own model (an ASR-only key is no error for the default trigger-word model); with it, at once."""
    from hydra.errors import ConfigCompositionException

    from seqflow.cli import _check_config_first

    _check_config_first(["model.no_such_key=1", "trainer.max_epochs=2"])
    with pytest.raises(ConfigCompositionException, match="model.no_such_key"):
        _check_config_first(["model=trigger_word", "model.no_such_key=1"])
