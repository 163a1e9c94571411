"""seqflow.tracking.runs against a real MLflow SQLite store in tmp_path."""

from __future__ import annotations


import mlflow
import pytest
from mlflow.tracking import MlflowClient

from seqflow.config import load_config
from seqflow.errors import ConfigError
from seqflow.tracking.runs import (
    MAX_PARAM_VALUE_LEN,
    experiment_name,
    flatten_params,
    log_config_params,
    log_params_batched,
    setup_mlflow,
    standard_tags,
)


@pytest.fixture(scope="module")
def _db(tmp_path_factory):
    """One SQLite store per module: creating MLflow's tables takes seconds."""
    root = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{root}/mlflow.db", root / "mlartifacts"


@pytest.fixture
def store(_db, monkeypatch):
    """(tracking_uri, artifact_dir); MLflow globals and env restored afterwards."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    yield _db
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)


def test_setup_creates_experiment_with_artifact_location_and_is_idempotent(store):
    uri, art = store
    exp_id = setup_mlflow(uri, art, experiment_name("asr_test"))
    assert mlflow.get_tracking_uri() == uri
    exp = MlflowClient(uri).get_experiment(exp_id)
    assert exp.name == "seqflow/asr_test"
    assert exp.artifact_location == "file://" + str(art.resolve())
    assert setup_mlflow(uri, art, "seqflow/asr_test") == exp_id

    with mlflow.start_run() as run:  # the active experiment is ours; artifacts land in art/
        mlflow.log_text("hello", "note.txt")
    assert run.info.experiment_id == exp_id
    assert (art / run.info.run_id / "artifacts" / "note.txt").read_text() == "hello"


def test_setup_restores_a_deleted_experiment(store):
    uri, art = store
    exp_id = setup_mlflow(uri, art, "seqflow/ctc")
    MlflowClient(uri).delete_experiment(exp_id)
    assert setup_mlflow(uri, art, "seqflow/ctc") == exp_id
    assert MlflowClient(uri).get_experiment(exp_id).lifecycle_stage == "active"


def test_setup_rejects_empty_uri():
    with pytest.raises(ConfigError, match="tracking_uri"):
        setup_mlflow("", "/tmp/x", "seqflow/x")


def test_standard_tags_exact_keys_logged_on_a_run(store):
    uri, art = store
    setup_mlflow(uri, art, "seqflow/trigger_word")
    tags = standard_tags("d41d8cd98f00b204e9800998ecf8427e.dir", "abc123", "/w/shards/d41-77", 2)
    assert tags == {
        "data.dvc_md5": "d41d8cd98f00b204e9800998ecf8427e.dir",
        "git.commit": "abc123",
        "shards.uri": "/w/shards/d41-77",
        "ray.num_workers": "2",
    }
    assert standard_tags(None, "", None, None)["git.commit"] == "unknown"
    with mlflow.start_run() as run:
        mlflow.set_tags(tags)
    stored = MlflowClient(uri).get_run(run.info.run_id).data.tags
    assert {k: stored[k] for k in tags} == tags


def test_flatten_real_config_dotted_keys_lists_and_truncation():
    cfg = load_config(["data.trigger_word=activate"])
    params = flatten_params(cfg)
    assert params["model.net.gru_hidden"] == "128"
    assert params["model.registered_name"] == "seqflow-trigger-word-emb-activate"
    assert params["clips.positive_gain_db"] == "[-6, 3]"
    assert all(isinstance(v, str) and len(v) <= MAX_PARAM_VALUE_LEN for v in params.values())

    long = flatten_params({"a": {"b": "x" * 5000, "c": None, "d": {}}})
    assert len(long["a.b"]) == MAX_PARAM_VALUE_LEN and long["a.b"].endswith("...[truncated]")
    assert long["a.c"] == "None" and long["a.d"] == "{}"


def test_log_params_batched_over_100_and_real_config(store):
    uri, art = store
    setup_mlflow(uri, art, "seqflow/trigger_word")
    many = {f"p.{i:03d}": i for i in range(250)}
    with mlflow.start_run() as run:
        assert log_params_batched(many) == 250
        n_cfg = log_config_params(load_config(["model=trigger_word"]))
    params = MlflowClient(uri).get_run(run.info.run_id).data.params
    assert len(params) == 250 + n_cfg
    assert params["p.249"] == "249" and params["model.net.conv_kernel"] == "15"


def test_log_params_without_run_fails_clearly(store):
    uri, art = store
    setup_mlflow(uri, art, "seqflow/trigger_word")
    with pytest.raises(mlflow.exceptions.MlflowException, match="no active MLflow run"):
        log_params_batched({"a": 1})
