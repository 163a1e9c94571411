"""Run names, registry descriptions, the best-checkpoint artifact, run status while training and
system metrics from a real Lightning fit, against a real MLflow SQLite store in tmp_path."""

from __future__ import annotations

import json

import lightning.pytorch as pl
import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

from seqflow.config import load_config
from seqflow.errors import ConfigError
from seqflow.tracking.artifacts import BEST_CHECKPOINT, BEST_CHECKPOINT_INFO, log_best_checkpoint, log_results
from seqflow.tracking.registry import model_description, version_description
from seqflow.tracking.runs import (
    end_run,
    is_server_uri,
    run_name,
    short_version,
    standard_tags,
    start_training_run,
    training_run_name,
)
from seqflow.train.worker import SystemMetrics, system_metrics_callback

MD5 = "35e1343b9a0f4c1e8d2b7a6c5f4e3d21.dir"


@pytest.fixture(scope="module")
def _db(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{root}/mlflow.db", root


@pytest.fixture
def cfg(_db, tmp_path, monkeypatch):
    """The default config pointed at the module's SQLite store; MLflow globals restored after."""
    uri, root = _db
    monkeypatch.setenv("SEQFLOW_WORKDIR", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    c = load_config([f"tracking.artifact_location={root}/mlartifacts"])
    yield c
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)


def test_run_names_say_model_subject_and_data_version() -> None:
    assert short_version(MD5) == "35e1343" and short_version(None) == "unknown"
    assert run_name("trigger_word_embedding", "activate", MD5) == "trigger_word_embedding-activate-35e1343"
    assert run_name("trigger_word", "Hey Jarvis", MD5, "round", "2") == "trigger_word-hey-jarvis-35e1343-round-2"
    assert len(run_name("m" * 300, "x", MD5)) == 250
    tw = load_config(["data.trigger_word=hey jarvis"])
    assert training_run_name(tw, MD5) == "trigger_word_embedding-hey-jarvis-35e1343"
    assert training_run_name(tw, MD5, "hard-negative-mining").endswith("-35e1343-hard-negative-mining")
    # speech recognition is about its data, not the synthetic corpus's trigger word
    assert training_run_name(load_config(["model=ctc"]), MD5) == "ctc-synthetic-35e1343"


def test_tracking_uri_env_wins_over_config_and_override_wins_over_env(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SEQFLOW_WORKDIR", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert load_config([]).tracking.tracking_uri == f"sqlite:///{tmp_path}/mlflow.db"
    assert load_config(["tracking=server"]).tracking.tracking_uri == "http://127.0.0.1:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert load_config([]).tracking.tracking_uri == "http://127.0.0.1:5999"
    assert load_config(["tracking=server"]).tracking.tracking_uri == "http://127.0.0.1:5999"
    assert load_config(["tracking.tracking_uri=sqlite:///x.db"]).tracking.tracking_uri == "sqlite:///x.db"
    assert is_server_uri("https://mlflow.example.org") and not is_server_uri("sqlite:///x.db")


def test_descriptions_name_the_model_its_trigger_word_and_its_gate() -> None:
    d = model_description("trigger_word", "trigger_word_embedding", "seqflow.families.trigger_word_embedding",
                          "hey jarvis", "test/frr", True, "challenger", "champion", "Trained for the kitchen.")
    assert '"hey jarvis"' in d and "`trigger_word_embedding`" in d and "`test/frr`" in d and "lower" in d
    assert "same test set" in d and d.endswith("Trained for the kitchen.")
    asr = model_description("asr", "ctc", "seqflow.families.ctc", "librispeech", "test/wer", True)
    assert asr.startswith("Speech recognizer trained on `librispeech`") and "transcript" in asr
    v = version_description("ctc-librispeech-35e1343", "r1", MD5, "f00d", "test/wer", 0.25, "sha256:9f",
                            "kept", "challenger 0.25 not < champion 0.2 (v3); kept")
    assert "`35e1343`" in v and MD5 in v and "`test/wer` = 0.25" in v and "sha256:9f" in v and "kept:" in v


def test_training_run_stays_running_until_ended_and_logs_the_best_checkpoint(cfg, tmp_path) -> None:
    tags = standard_tags(MD5, "f00d", str(tmp_path / "shards"), 2)
    run_id = start_training_run(cfg, tags, run_name=training_run_name(cfg, MD5))
    client = MlflowClient()
    run = client.get_run(run_id)
    assert run.info.status == "RUNNING" and run.info.run_name == "trigger_word_embedding-activate-35e1343"
    assert run.data.params["model.name"] == "trigger_word_embedding"
    # logging results (as the stages do) leaves the status alone
    log_results(run_id, {"val/loss": 0.5}, {"x": "y"})
    assert client.get_run(run_id).info.status == "RUNNING"

    ckpt = tmp_path / "checkpoint.ckpt"
    torch.save({"state_dict": {"w": torch.arange(4.0)}, "epoch": 2}, ckpt)
    assert log_best_checkpoint(run_id, ckpt, {"epoch": 2, "monitor": "val/loss", "value": 0.21}) == BEST_CHECKPOINT
    end_run(run_id)
    assert client.get_run(run_id).info.status == "FINISHED"
    got = mlflow.artifacts.download_artifacts(f"runs:/{run_id}/{BEST_CHECKPOINT}", dst_path=str(tmp_path / "dl"))
    assert torch.equal(torch.load(got)["state_dict"]["w"], torch.arange(4.0))
    info = json.loads(mlflow.artifacts.load_text(f"runs:/{run_id}/{BEST_CHECKPOINT_INFO}"))
    assert info == {"epoch": 2, "monitor": "val/loss", "value": 0.21}
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        log_best_checkpoint(run_id, tmp_path / "missing.ckpt", {})

    parent = start_training_run(cfg, tags, run_name="p", keep_running=False)
    assert client.get_run(parent).info.status == "FINISHED"


def test_setup_on_a_local_store_still_rejects_an_empty_uri(cfg) -> None:
    from seqflow.tracking.runs import setup_mlflow

    with pytest.raises(ConfigError, match="tracking_uri is empty"):
        setup_mlflow("", "/tmp/x", "seqflow/x")


class _Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(8, 1)

    def training_step(self, batch, batch_idx):
        return self.lin(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_system_metrics_are_sampled_during_a_real_fit_and_once_at_its_end(cfg, tmp_path) -> None:
    run_id = start_training_run(cfg, {}, run_name="sysmetrics")
    cb = system_metrics_callback(cfg, run_id, local_rank=0, node_rank=0, multi_node=False)
    assert isinstance(cb, SystemMetrics) and cb.interval_s == 10.0 and cb.node_id is None
    assert system_metrics_callback(cfg, run_id, local_rank=1, node_rank=0, multi_node=False) is None
    assert system_metrics_callback(cfg, run_id, 0, 1, multi_node=True).node_id == "node1"

    cb = SystemMetrics(run_id, cfg.tracking.tracking_uri, interval_s=0.2)
    data = torch.utils.data.TensorDataset(torch.randn(64, 8))
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[cb])
    trainer.fit(_Tiny(), torch.utils.data.DataLoader(data, batch_size=8))
    assert cb.samples >= 1
    metrics = MlflowClient().get_run(run_id).data.metrics
    for key in ("system/cpu_utilization_percentage", "system/system_memory_usage_megabytes",
                "system/disk_usage_percentage"):
        assert key in metrics, sorted(metrics)
    assert 0.0 <= metrics["system/cpu_utilization_percentage"] <= 100.0
    history = MlflowClient().get_metric_history(run_id, "system/system_memory_usage_megabytes")
    assert len(history) == cb.samples and all(m.value > 0 for m in history)
