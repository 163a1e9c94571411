"""Credentials never land in MLflow, on every path seqflow writes through (issue 9), on a real
SQLite store: Lightning's ``MLFlowLogger`` as the Ray workers build it, ``log_results`` (tags,
whole folders, files, JSON documents) and the registry (model and version descriptions and tags).
Everything is read back from the store — params, tags, every artifact file's text, descriptions —
and no secret substring may appear anywhere; what has nothing to hide is stored unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow

from seqflow.tracking.artifacts import log_results
from seqflow.tracking.redact import MARK
from seqflow.tracking.redacting_client import RedactingClient, mlflow_logger
from seqflow.tracking.registry import register_and_promote
from _mlflow_store import store_with_logged_model

AKIA, SECRET, PW, TOK, GHP = ("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMIK7MDENGbPxRfiCY", "hunter2pw",
                              "tok3nSECRETvalue", "ghp_" + "a1B2c3D4e5" * 4)
SECRETS = (AKIA, SECRET, PW, TOK, GHP)
S3 = f"s3://{AKIA}:{SECRET}@minio:9000/shards"
HTTPS = f"https://user:{PW}@data.example.com/corpus"
QUERY = f"https://tracking.example.com/api?token={TOK}&page=2"
EXP = "seqflow/trigger_word"


def _everything(client, run_id: str, model: str, dst: Path) -> dict[str, str]:
    """What the store holds for the run and the registered model, as text."""
    run = client.get_run(run_id)
    found = {"params": json.dumps(run.data.params), "tags": json.dumps(run.data.tags)}
    art = Path(mlflow.artifacts.download_artifacts(f"runs:/{run_id}/", dst_path=str(dst)))
    for p in sorted(art.rglob("*")):
        if p.is_file():
            found[f"artifact {p.relative_to(art)}"] = p.read_bytes().decode("utf-8", "replace")
    rm, mv = client.get_registered_model(model), client.get_model_version(model, "1")
    found.update({"model description": rm.description or "", "model tags": json.dumps(rm.tags),
                  "version description": mv.description or "", "version tags": json.dumps(mv.tags)})
    return found


def test_no_secret_reaches_the_store(tmp_path: Path) -> None:
    with store_with_logged_model(tmp_path / "store", EXP) as (client, model_uri):
        uri = mlflow.get_tracking_uri()
        run_id = client.create_run(client.get_experiment_by_name(EXP).experiment_id).info.run_id
        # Lightning: the hyperparameters the LightningModule saved, as the Trainer logs them
        logger = mlflow_logger(uri, run_id, EXP, log_model=False)
        logger.log_hyperparams({"data": {"root": S3}, "shards": {"uri": HTTPS}, "hub": {"token": GHP},
                                "tracking": {"uri": QUERY}, "features": {"n_mels": 40}})
        logger.log_metrics({"train/loss": 0.5}, step=1)
        # log_results: tags, a whole folder (the serving package), files, JSON documents
        pkg = tmp_path / "pkg"
        pkg.mkdir()
        (pkg / "config.json").write_text(json.dumps({"data": {"root": S3}, "password": PW, "n_mels": 40}))
        (pkg / "sub").mkdir()
        (pkg / "sub" / "notes.yaml").write_text(f"tracking: {QUERY}\n")
        weights = bytes(range(256)) * 4 + AKIA.encode()   # binary: uploaded byte for byte
        (pkg / "weights.bin").write_bytes(weights)
        note = tmp_path / "notes.txt"
        note.write_text(f"read from {S3} and {HTTPS}\n")
        log_results(run_id, metrics={"test/frr": 0.1}, tags={"data.uri": S3, "shards.uri": QUERY, "plain": "kept"},
                    folders={"package": pkg}, files={"notes": [note]},
                    documents={"evaluation/doc.json": {"source": HTTPS, "token": TOK, "n": 3}})
        # registry: descriptions and tags, through the client stages.register passes
        register_and_promote(model_uri, "m", run_id, metric_key="test/frr", client=RedactingClient(uri),
                             description=f"trained on {S3}; data at {HTTPS}; tracking {QUERY}")
        RedactingClient(uri).set_model_version_tag("m", "1", "source", HTTPS)
        found = _everything(client, run_id, "m", tmp_path / "dl")

    binary = "artifact package/weights.bin"   # compared byte for byte below
    leaks = {where: s for where, text in found.items() for s in SECRETS if s in text and where != binary}
    assert not leaks, leaks
    assert MARK in found["model description"] and "minio:9000/shards" in found["model description"]
    params = json.loads(found["params"])
    assert params["data/root"] == f"s3://{MARK}:{MARK}@minio:9000/shards" and params["hub/token"] == MARK
    assert params["features/n_mels"] == "40"                       # nothing to hide: unchanged
    assert json.loads(found["tags"])["plain"] == "kept"
    assert json.loads(found["artifact package/config.json"])["n_mels"] == 40
    assert (tmp_path / "dl" / "package" / "weights.bin").read_bytes() == weights   # binary untouched
    assert PW in (pkg / "config.json").read_text()                 # the local files are never rewritten
