"""seqflow's tracking code against a real ``mlflow server`` over HTTP (SQLite + proxied artifacts
in tmp): experiments, run artifacts, the best checkpoint, a pyfunc model and its registered
version all go through the server (``mlflow-artifacts:``), never to the local artifact_location.
The whole pipeline against a server is tests/integration/test_pipeline.py::test_pipeline_end_to_end."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
import torch
from _mlflow_server import MlflowServer
from mlflow.tracking import MlflowClient

from seqflow.config import load_config
from seqflow.errors import ConfigError
from seqflow.models.trigger_word import TriggerWordNet
from seqflow.serve.detector import save_detector
from seqflow.tracking.artifacts import BEST_CHECKPOINT, log_best_checkpoint, log_results
from seqflow.tracking.pyfunc import log_trigger_word_model
from seqflow.tracking.registry import model_description, register_and_promote
from seqflow.tracking.runs import (
    log_model_to_run,
    setup_mlflow,
    standard_tags,
    start_training_run,
    training_run_name,
)

pytestmark = pytest.mark.slow

SR = 16000
MD5 = "0123456789abcdef0123456789abcdef.dir"
MODEL_CFG = {
    "features": {"sample_rate": SR, "n_fft": 512, "win_length": 400, "hop_length": 160, "n_mels": 40},
    "net": {"conv_channels": 8, "conv_kernel": 15, "conv_stride": 4, "gru_hidden": 8,
            "gru_layers": 1, "dropout": 0.0},
}


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """One healthy server for this module's tests (each uses its own experiments and models)."""
    with MlflowServer(tmp_path_factory.mktemp("mlflow") / "server") as srv:
        srv.wait_healthy(120)
        yield srv


@pytest.fixture
def server(mlflow_server, monkeypatch):
    """The server; MLFLOW_TRACKING_URI points at it (the config follows), restored after."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    yield mlflow_server
    mlflow.set_tracking_uri(None)


def test_runs_models_and_versions_go_through_the_server(server, tmp_path, monkeypatch) -> None:
    project = tmp_path / "project"
    monkeypatch.setenv("SEQFLOW_WORKDIR", str(project))
    cfg = load_config(["model=trigger_word"])
    assert cfg.tracking.tracking_uri == server.url  # MLFLOW_TRACKING_URI wins over the config file
    assert cfg.tracking.artifact_location == f"{project}/mlartifacts"  # set, and ignored for a server

    tags = standard_tags(MD5, "f00d", "shards/x", 2)
    run_id = start_training_run(cfg, tags, run_name=training_run_name(cfg, MD5))
    client = MlflowClient()
    run = client.get_run(run_id)
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.name == "seqflow/trigger_word" and exp.artifact_location.startswith("mlflow-artifacts:")
    assert run.info.artifact_uri.startswith("mlflow-artifacts:") and run.info.run_name == "trigger_word-activate-0123456"

    ckpt = tmp_path / "checkpoint.ckpt"
    torch.save({"epoch": 1}, ckpt)
    log_best_checkpoint(run_id, ckpt, {"epoch": 1, "monitor": "val/loss", "value": 0.3})
    torch.manual_seed(0)
    det = save_detector(tmp_path / "detector", TriggerWordNet(40, 8, 15, 4, 8, 1, 0.0), MODEL_CFG,
                        threshold=0.0, refractory_s=1.0)
    wav = (0.1 * np.random.default_rng(0).standard_normal(2 * SR)).astype(np.float32)
    log_results(run_id, {"test/frr": 0.25}, {"eval.test_set": "sha256:abc"}, folders={"package": det})
    info = log_model_to_run(run_id, log_trigger_word_model, det, wav)
    name = "seqflow-trigger-word-activate"
    description = model_description("trigger_word", "trigger_word", "seqflow.families.trigger_word", "activate",
                                    "test/frr")
    d = register_and_promote(info.model_uri, name, run_id, "test/frr", description=description)
    assert d.promoted

    # every artifact landed in the server's --artifacts-destination, nothing on the client side
    run_dir = server.artifacts / exp.experiment_id / run_id / "artifacts"
    assert (run_dir / BEST_CHECKPOINT).is_file() and (run_dir / "config.yaml").is_file()
    assert {p.name for p in (run_dir / "package").iterdir()} == {"detector.json", "weights.pt"}
    model = client.get_logged_model(info.model_id)
    assert model.artifact_location.startswith("mlflow-artifacts:")
    assert any(server.artifacts.rglob("MLmodel")), "the pyfunc model was not stored through the server"
    assert not (project / "mlartifacts").exists() and not (tmp_path / "mlruns").exists()

    # the registry: descriptions, and the version loads back through the server
    rm = client.get_registered_model(name)
    assert rm.description == description and '"activate"' in rm.description
    mv = client.get_model_version(name, str(d.version))
    assert client.get_model_version_download_uri(name, mv.version).startswith("mlflow-artifacts:")
    assert "`0123456`" in mv.description and "`test/frr` = 0.25" in mv.description and "promoted" in mv.description
    pred = mlflow.pyfunc.load_model(f"models:/{name}@champion").predict(wav)
    assert list(pred.columns) == ["start", "end", "score"] and len(pred) >= 1  # threshold 0 always fires

    # an experiment that keeps artifacts at a local path would bypass the server: refused, named
    client.create_experiment("seqflow/local-artifacts", artifact_location=(tmp_path / "elsewhere").as_uri())
    with pytest.raises(ConfigError, match="seqflow/local-artifacts.*bypass the server"):
        setup_mlflow(server.url, project / "mlartifacts", "seqflow/local-artifacts")


def _register_on_server(url: str, exp: str, name: str, metric: float, q) -> None:
    from seqflow.tracking.registry import register_and_promote

    try:
        client = MlflowClient(tracking_uri=url, registry_uri=url)
        run = client.create_run(exp)
        client.log_metric(run.info.run_id, "test/frr", metric)
        d = register_and_promote(run.info.artifact_uri + "/model", name, run.info.run_id, "test/frr", client=client,
                                 test_set_id="md5/test")
        q.put((metric, d.version, None))
    except Exception as e:  # noqa: BLE001 - reported to the parent, which fails the test with it
        q.put((metric, None, f"{type(e).__name__}: {e}"))


def test_concurrent_registrations_through_the_server_decide_in_version_order(server) -> None:
    """Five processes register one model at once through the server (``auto`` → version order):
    every version is complete, each decided against the best version numbered below it (so the
    decisions ran one after another), and the champion is the best."""
    from _subprocesses import fork_all

    client = MlflowClient(tracking_uri=server.url, registry_uri=server.url)
    exp = client.create_experiment("race")
    name = "seqflow-race-server"
    metrics = [0.25, 0.1, float("nan"), 0.3, 0.15]
    results = fork_all(_register_on_server, [(server.url, exp, name, m) for m in metrics])
    assert [e for *_, e in results if e] == []
    by_version = {v: m for m, v, _ in results}
    assert sorted(by_version) == [1, 2, 3, 4, 5]
    best_below = None
    for v in sorted(by_version):
        mv = client.get_model_version(name, str(v))
        run = client.get_run(mv.run_id)
        assert mv.tags["seqflow.status"] == "ready", (v, mv.tags)
        before = run.data.tags["promotion.champion_version_before"]
        assert before == ("none" if best_below is None else str(best_below)), (v, before, by_version)
        m = by_version[v]
        if m == m and (best_below is None or m < by_version[best_below]):
            best_below = v
    assert int(client.get_registered_model(name).aliases["champion"]) == best_below
    assert by_version[best_below] == 0.1
