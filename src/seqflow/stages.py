"""The pipeline's stages as plain functions (no Prefect here), so each is callable and testable
on its own; :mod:`seqflow.flow` wraps each one in a Prefect task.

Every stage takes the composed config (``DictConfig``) and returns plain JSON-able dicts.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from seqflow.errors import ConfigError

log = logging.getLogger("seqflow.pipeline")
MODELS = ("trigger_word", "ctc", "transformer")


def check_config(cfg: DictConfig) -> None:
    """Fail fast, before any work, on config values that cannot work.

    Raises:
        ConfigError: unknown data source or model, empty trigger word, unknown voice, bad worker
        counts, a trigger-word model on a source without trigger-word labels.
    """
    from seqflow.data.sources import check_source_config

    if cfg.model.name not in MODELS:
        raise ConfigError(f"model {cfg.model.name!r} is unknown; choose one of {MODELS}")
    if int(cfg.ray.num_workers) < 1 or int(cfg.trainer.num_workers) < 0:
        raise ConfigError("ray.num_workers must be >= 1 and trainer.num_workers >= 0")
    if cfg.model.name == "trigger_word" and not (
            cfg.data.source == "synthetic" or (cfg.data.source == "speech_commands" and cfg.data.get("trigger_word"))):
        raise ConfigError("model=trigger_word needs data=synthetic, or data=speech_commands with "
                          "data.trigger_word=<word> (its folder holds the positives)")
    if cfg.model.name != "trigger_word" and cfg.data.source == "speech_commands" and cfg.data.get("trigger_word"):
        raise ConfigError(f"model={cfg.model.name} needs transcribed utterances; unset data.trigger_word")
    check_source_config(cfg.data, int(cfg.audio.sample_rate))


def prepare(cfg: DictConfig) -> Path:
    """Build or ingest the corpus under ``cfg.data.root``; returns the manifest path."""
    from seqflow.data.sources import prepare_source

    return prepare_source(cfg.data, int(cfg.audio.sample_rate), int(cfg.seed))


def validate(cfg: DictConfig) -> dict:
    """Decode every file once, quarantine bad ones; raises ``DataValidationError`` past the limit."""
    from seqflow.data.validate import validate_corpus

    d = cfg.data
    report = validate_corpus(Path(d.root), min_duration=float(d.min_duration), max_duration=float(d.max_duration),
                             max_bad_fraction=float(d.max_bad_fraction), sample_rate=int(cfg.audio.sample_rate))
    return {"total": report.total, "valid": report.valid, "quarantined": report.quarantined,
            "reasons": dict(report.reasons)}


def version(cfg: DictConfig) -> dict:
    """``dvc add`` + ``dvc push`` the corpus; returns ``{"md5", "git_commit", "dvc_file"}``."""
    from seqflow.data.dvc import git_commit, version_data

    root = Path(cfg.workdir)
    data_dir = Path(cfg.data.root).relative_to(root)
    v = version_data(root, data_dir=str(data_dir), remote_name=cfg.data.dvc.remote_name,
                     remote_url=str(cfg.data.dvc.remote_url))
    return {"md5": v.md5, "git_commit": git_commit(root), "dvc_file": str(v.dvc_file)}


def shard(cfg: DictConfig, data_md5: str) -> dict:
    """Write (or reuse) WebDataset shards for train/val/test; returns the shard set as a dict."""
    from seqflow.shards.writer import shard_dataset

    s = shard_dataset(cfg, Path(cfg.data.root), data_md5)
    return {"root": str(s.root), "index": {k: str(v) for k, v in s.index_paths.items()},
            "num_samples": dict(s.num_samples), "tokenizer_dir": str(s.tokenizer_dir) if s.tokenizer_dir else None}


def experiment_name(cfg: DictConfig) -> str:
    return f"{cfg.tracking.experiment_prefix}/{cfg.model.name}"


def train(cfg: DictConfig, shards: dict, data: dict) -> dict:
    """Open the MLflow run (params + standard tags), then fit on Ray Train; returns run id,
    checkpoint file and rank-0 metrics."""
    import mlflow

    from seqflow.tracking.runs import log_config_params, setup_mlflow, standard_tags
    from seqflow.train.launcher import train_with_ray

    exp = experiment_name(cfg)
    setup_mlflow(cfg.tracking.tracking_uri, cfg.tracking.artifact_location, exp)
    tags = standard_tags(data["md5"], data["git_commit"], shards["root"], int(cfg.ray.num_workers))
    with mlflow.start_run(tags=tags) as run:
        log_config_params(cfg, run_id=run.info.run_id)
        mlflow.log_dict(OmegaConf.to_container(cfg, resolve=True), "config.yaml")
        run_id = run.info.run_id
    result = train_with_ray(cfg, run_id, exp, Path(shards["index"]["train"]), Path(shards["index"]["val"]),
                            run_name=f"{cfg.model.name}-{run_id}", tokenizer_dir=shards.get("tokenizer_dir"))
    client = mlflow.MlflowClient()
    metrics = client.get_run(run_id).data.metrics
    return {"run_id": run_id, "checkpoint": str(result.checkpoint_file), "metrics": dict(metrics)}


def evaluate(cfg: DictConfig, shards: dict, trained: dict) -> dict:
    """Evaluate on the test split (FRR/FA-h and a DET plot for the trigger word; WER/CER and a
    hypotheses table for ASR), log it all on the training run, package the model for serving."""
    import tempfile

    import mlflow

    from seqflow.evaluate.run import evaluate_asr_model, evaluate_trigger_word_model

    out = Path(tempfile.mkdtemp(prefix="seqflow-eval-"))
    if cfg.model.name == "trigger_word":
        ev = evaluate_trigger_word_model(cfg, shards["index"]["test"], trained["checkpoint"], out)
    else:
        ev = evaluate_asr_model(cfg, shards["index"]["test"], trained["checkpoint"], shards["tokenizer_dir"], out)
    mlflow.set_tracking_uri(cfg.tracking.tracking_uri)
    with mlflow.start_run(run_id=trained["run_id"]):
        mlflow.log_metrics(ev.metrics)
        for folder, paths in ev.artifacts.items():
            for path in paths:
                mlflow.log_artifact(str(path), folder)
        for name, doc in ev.documents.items():
            mlflow.log_dict(doc, name)
        mlflow.set_tag("eval.test_set", test_set_id(shards))
    return {"metrics": ev.metrics, "model_dir": str(ev.model_dir)}


def test_set_id(shards: dict) -> str:
    """Names the test set a metric was measured on: ``<data-md5>-<config-hash>/test``."""
    return f"{Path(shards['root']).name}/test"


def register(cfg: DictConfig, shards: dict, trained: dict, evaluated: dict) -> dict:
    """Log the pyfunc model, register it as ``challenger`` and run the ``champion`` gate."""
    import mlflow
    import numpy as np

    from seqflow.tracking.pyfunc import log_asr_model, log_trigger_word_model
    from seqflow.tracking.registry import register_and_promote

    mlflow.set_tracking_uri(cfg.tracking.tracking_uri)
    example = np.zeros(int(cfg.audio.sample_rate), dtype=np.float32)
    log_model = log_trigger_word_model if cfg.model.name == "trigger_word" else log_asr_model
    with mlflow.start_run(run_id=trained["run_id"]):
        info = log_model(evaluated["model_dir"], example)
    decision = register_and_promote(info.model_uri, cfg.model.registered_name, trained["run_id"],
                                    metric_key=cfg.model.gate_metric,
                                    challenger_alias=cfg.tracking.challenger_alias,
                                    champion_alias=cfg.tracking.champion_alias,
                                    test_set_id=test_set_id(shards))
    aliases = [cfg.tracking.challenger_alias] + ([cfg.tracking.champion_alias] if decision.promoted else [])
    return {"name": cfg.model.registered_name, "version": decision.version, "aliases": aliases,
            "reason": decision.reason, "decision": {k: v for k, v in asdict(decision).items()}}


def format_summary(summary: dict) -> str:
    """The lines ``make pipeline`` ends with."""
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else json.dumps(v) if isinstance(v, (dict, list)) else str(v)
    width = max(len(k) for k in summary)
    lines = ["", "seqflow pipeline finished", "-" * 60]
    lines += [f"{k:<{width}}  {fmt(v)}" for k, v in summary.items()]
    return "\n".join(lines)
