"""The Prefect flow ``pipeline``: prepare → validate → version → shard → train → evaluate → register.

One task per stage; the version step retries (transient remote errors). Runs on Prefect's
ephemeral API unless ``PREFECT_API_URL`` points at a server. Entry points: ``seqflow pipeline``,
``python flows/pipeline.py``, ``make pipeline``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from seqflow import stages

log = logging.getLogger("seqflow.pipeline")


def _cfg(cfg: dict) -> DictConfig:
    return OmegaConf.create(cfg)


@task(name="prepare", cache_policy=NO_CACHE)
def prepare(cfg: dict) -> str:
    return str(stages.prepare(_cfg(cfg)))


@task(name="validate", cache_policy=NO_CACHE)
def validate(cfg: dict) -> dict:
    return stages.validate(_cfg(cfg))


@task(name="version", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def version(cfg: dict) -> dict:
    return stages.version(_cfg(cfg))


@task(name="shard", cache_policy=NO_CACHE)
def shard(cfg: dict, data_md5: str) -> dict:
    return stages.shard(_cfg(cfg), data_md5)


@task(name="train", cache_policy=NO_CACHE)
def train(cfg: dict, shards: dict, data: dict) -> dict:
    return stages.train(_cfg(cfg), shards, data)


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate(cfg: dict, shards: dict, trained: dict) -> dict:
    return stages.evaluate(_cfg(cfg), shards, trained)


@task(name="register", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def register(cfg: dict, shards: dict, trained: dict, evaluated: dict) -> dict:
    return stages.register(_cfg(cfg), shards, trained, evaluated)


@flow(name="pipeline", log_prints=True)
def pipeline(cfg: dict) -> dict[str, Any]:
    """Run every stage on the composed seqflow config ``cfg`` (a plain dict); returns a summary."""
    t0 = time.perf_counter()
    prepare(cfg)
    report = validate(cfg)
    data = version(cfg)
    shards = shard(cfg, data["md5"])
    trained = train(cfg, shards, data)
    evaluated = evaluate(cfg, shards, trained)
    registered = register(cfg, shards, trained, evaluated)
    summary = {
        "data.dvc_md5": data["md5"],
        "validate": report,
        "shards": shards["root"],
        "throughput/samples_per_s": trained["metrics"].get("throughput/samples_per_s"),
        **{k: v for k, v in evaluated["metrics"].items() if k.startswith("test/")},
        "mlflow_run_id": trained["run_id"],
        "registered_model": registered["name"],
        "version": registered["version"],
        "aliases": registered["aliases"],
        "promotion": registered["reason"],
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    print(stages.format_summary(summary))
    return summary


def run_pipeline(overrides: list[str] | None = None) -> dict[str, Any]:
    """Compose the config with Hydra ``overrides`` and run the flow (used by the CLI)."""
    from seqflow.config import load_config

    cfg = load_config(overrides)
    stages.check_config(cfg)
    return pipeline(OmegaConf.to_container(cfg, resolve=True))
