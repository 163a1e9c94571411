"""The default synthetic corpus is deterministic: a fresh build (prepare + validate) in an empty
project versions to exactly the md5 in the ``data.dvc`` committed with the repository."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from seqflow import stages
from seqflow.config import load_config

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def test_fresh_default_corpus_matches_committed_data_dvc(project: Path, monkeypatch) -> None:
    committed = yaml.safe_load((REPO / "data.dvc").read_text())["outs"][0]["md5"]
    monkeypatch.setenv("SEQFLOW_WORKDIR", str(project))
    # the default corpus; the festival evaluation set (Debian downloads) is not part of it
    cfg = load_config(["evaluate.heldout_engine.enabled=false"])
    stages.prepare(cfg)
    stages.validate(cfg)
    version = stages.version(cfg)
    assert version["md5"] == committed.removesuffix(".dir")
    assert (project / "data.dvc").read_text() == (REPO / "data.dvc").read_text()
