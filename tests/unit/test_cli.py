"""The ``seqflow`` command line: help, Hydra errors, and bad input to ``detect``."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from seqflow.cli import app

runner = CliRunner()


def test_help_lists_commands() -> None:
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for cmd in ("pipeline", "prepare", "detect", "transcribe", "ui", "serve", "deploy", "export"):
        assert cmd in res.output


def test_unknown_config_key_is_hydra_error() -> None:
    from hydra.errors import ConfigCompositionException

    from seqflow.config import load_config

    with pytest.raises(ConfigCompositionException, match="data.no_such_key"):
        load_config(["data.no_such_key=1"])


def test_overrides_reach_the_config() -> None:
    from seqflow.config import load_config

    cfg = load_config(["data.trigger_word=hey jarvis", "ray.num_workers=3", "trainer.max_epochs=2"])
    assert (cfg.data.trigger_word, cfg.ray.num_workers, cfg.trainer.max_epochs) == ("hey jarvis", 3, 2)
    assert cfg.tracking.tracking_uri.startswith("sqlite:///") and Path(cfg.workdir).is_absolute()


@pytest.mark.parametrize("command", ["detect", "transcribe"])
@pytest.mark.parametrize("content", [None, b"this is not audio"])
def test_bad_file_exits_2_naming_it(tmp_path: Path, content: bytes | None, command: str) -> None:
    path = tmp_path / "clip.wav"
    if content is not None:
        path.write_bytes(content)
    res = runner.invoke(app, [command, str(path)])
    assert res.exit_code == 2
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and str(path) in lines[0]
    assert ("missing" if content is None else "unreadable") in lines[0]


def test_model_list_composes_one_config_per_model() -> None:
    from seqflow.config import split_model_list

    models, rest = split_model_list(["model=[trigger_word, ctc]", "trainer.max_epochs=2"])
    assert models == ["trigger_word", "ctc"] and rest == ["trainer.max_epochs=2"]
    assert split_model_list(["model=ctc"]) == ([], ["model=ctc"])


def test_ui_on_a_tracking_server_points_at_it() -> None:
    """An mlflow server is its own UI: `seqflow ui` names it instead of starting `mlflow ui` on an http URI."""
    res = runner.invoke(app, ["ui", "--tracking-uri", "http://127.0.0.1:5999"])
    assert res.exit_code == 0
    assert "open http://127.0.0.1:5999" in res.output
