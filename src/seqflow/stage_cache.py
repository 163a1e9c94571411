"""Reuse of finished pipeline stages across runs: Prefect task caching with seqflow's own key.

A stage's cache key is the SHA-256 of its name, its inputs (the whole resolved config — workdir and
tracking URI included — plus what earlier stages returned: the data version ``md5`` and project
``git_commit``, the shard set folder ``<data-md5>-<config-hash>``, run ids) and seqflow's release
(:func:`code_version`), so a change of config, data, project commit (``git.commit``: the workdir's
repository, ``-dirty`` with uncommitted tracked changes) or seqflow release re-runs the stage and
everything after it. Results are persisted in Prefect's result
storage (``$PREFECT_HOME/storage``).

A cached result is used only while what it points at still exists (:func:`still_valid`: shard
index files, checkpoint files, MLflow runs, registered versions); otherwise the stage runs again.
``seqflow pipeline --no-cache`` (:func:`set_refresh`) runs every stage and overwrites the cache.
prepare, validate and version are never cached: they find the data version, which must follow the
files on disk.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("seqflow.pipeline")

_refresh = False


def set_refresh(flag: bool) -> None:
    """``True``: every cached stage runs again and replaces its cached result (``--no-cache``)."""
    global _refresh
    _refresh = bool(flag)


def refresh() -> bool:
    """Whether this process runs stages regardless of the cache (see :func:`set_refresh`)."""
    return _refresh


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """seqflow's release (``importlib.metadata.version("seqflow")``), part of every cache key.

    Edits to seqflow's own code in a checkout, or to a model family module outside seqflow, do
    not change it: after such an edit run with ``--no-cache``. (Keying on the checkout's git
    commit instead made every commit to seqflow invalidate every user's cache.)"""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("seqflow")
    except PackageNotFoundError:
        return "unknown"


def stage_key(context: Any, parameters: dict) -> str:
    """Prefect ``cache_key_fn``: ``seqflow-<stage>-<sha256(code version, stage, inputs)>``."""
    name = context.task.name
    payload = json.dumps(parameters, sort_keys=True, default=str)
    digest = hashlib.sha256(f"{code_version()}\n{name}\n{payload}".encode()).hexdigest()
    return f"seqflow-{name}-{digest}"


# Prefect task options of a cached stage.
CACHED = dict(cache_key_fn=stage_key, persist_result=True)

_PATH_KEYS = ("root", "checkpoint", "dir")
_RUN_KEYS = ("run_id", "mlflow_parent_run_id", "round_1_run_id")


def _run_exists(client, run_id: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id).info.lifecycle_stage == "active"
    except MlflowException:
        return False


def still_valid(result: Any, tracking_uri: str) -> bool:
    """Whether everything a stage result points at still exists: path values (keys ``root``,
    ``checkpoint``, ``dir``, and the files of an ``index`` mapping), MLflow runs (``run_id`` keys,
    ``runs:/<id>/...`` package URIs, a bare run id result) and a registered version (``name`` +
    ``version``). Recurses into nested dicts."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    if isinstance(result, str):  # start-mining-run returns the parent run id
        return _run_exists(client, result)
    if not isinstance(result, dict):
        return True
    for key, value in result.items():
        if key in _PATH_KEYS and isinstance(value, str) and value and not Path(value).exists():
            return False
        if key == "index" and isinstance(value, dict) and not all(Path(v).exists() for v in value.values()):
            return False
        if key in _RUN_KEYS and isinstance(value, str) and not _run_exists(client, value):
            return False
        if key == "package_uri" and str(value).startswith("runs:/") and \
                not _run_exists(client, str(value)[len("runs:/"):].split("/")[0]):
            return False
        if isinstance(value, dict) and not still_valid(value, tracking_uri):
            return False
    if "name" in result and "version" in result and "aliases" in result:
        try:
            client.get_model_version(str(result["name"]), str(result["version"]))
        except MlflowException:
            return False
    return True


def run_stage(task, tracking_uri: str, *args, **kwargs):
    """Call a cached Prefect ``task``: from the cache when its key matches and :func:`still_valid`,
    else (or with ``--no-cache``) by running it, which replaces the cached result."""
    if _refresh:
        return task.with_options(refresh_cache=True)(*args, **kwargs)
    result = task(*args, **kwargs)
    if still_valid(result, tracking_uri):
        return result
    log.warning("stage %s: its cached result points at something that is gone; running it again", task.name)
    return task.with_options(refresh_cache=True)(*args, **kwargs)
