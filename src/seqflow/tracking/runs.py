"""MLflow set-up, the standard run tags, and config → params.

Every seqflow run lives in the experiment ``seqflow/<model>`` and carries the tags
``data.dvc_md5``, ``git.commit``, ``shards.uri`` and ``ray.num_workers`` (DESIGN §6).

>>> exp_id = setup_mlflow("sqlite:///work/mlflow.db", "/work/mlartifacts", experiment_name("trigger_word"))
>>> with mlflow.start_run(experiment_id=exp_id):
...     mlflow.set_tags(standard_tags(md5, commit, "/work/shards/abc-123", 2))
...     log_config_params(cfg)
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from seqflow.errors import ConfigError

# Conservative limits: MLflow 3 accepts 6000-char param values, but older tracking servers (and
# some SQL back ends) cap values at 500 chars; one log-batch call takes at most 100 params.
MAX_PARAM_VALUE_LEN = 500
MAX_PARAM_KEY_LEN = 250
MAX_PARAMS_PER_BATCH = 100
_TRUNCATION_MARK = "...[truncated]"

TAG_DATA_MD5 = "data.dvc_md5"
TAG_GIT_COMMIT = "git.commit"
TAG_SHARDS_URI = "shards.uri"
TAG_RAY_WORKERS = "ray.num_workers"
TAG_PARENT_RUN = "mlflow.parentRunId"  # MLflow's own tag: the UI nests a run under this parent


def experiment_name(model_name: str, prefix: str = "seqflow") -> str:
    """``seqflow/<model>`` — the experiment every run of ``model_name`` (cfg.model.name) goes to."""
    return f"{prefix}/{model_name}"


def _artifact_uri(artifact_location: str | os.PathLike | None) -> str | None:
    """Local folder → absolute ``file://`` URI (created); URIs with a scheme pass through."""
    if artifact_location is None or str(artifact_location) == "":
        return None
    loc = str(artifact_location)
    if "://" in loc:
        return loc
    path = os.path.abspath(os.path.expanduser(loc))
    os.makedirs(path, exist_ok=True)
    return "file://" + path


def setup_mlflow(
    tracking_uri: str,
    artifact_location: str | os.PathLike | None,
    experiment_name: str,
) -> str:
    """Point MLflow at ``tracking_uri`` and make ``experiment_name`` the active experiment.

    Sets the tracking URI explicitly (``mlflow.set_tracking_uri``, which also exports
    ``MLFLOW_TRACKING_URI`` to child processes such as Ray workers and ``mlflow models serve``),
    never relying on MLflow's cwd-dependent default. The model registry follows the tracking
    URI unless ``MLFLOW_REGISTRY_URI`` is set. Creates the experiment with ``artifact_location`` (a local folder,
    e.g. ``<workdir>/mlartifacts``, turned into an absolute ``file://`` URI; or an object-store
    URI such as ``s3://bucket/mlartifacts``) when it does not exist; restores it when it was
    deleted. An existing experiment keeps its own artifact location.

    Returns:
        The experiment id (str).
    Raises:
        ConfigError: empty tracking URI or experiment name, or the store cannot be reached
        (message names the URI and MLflow's reason).
    """
    if not tracking_uri:
        raise ConfigError("tracking.tracking_uri is empty; set it (e.g. sqlite:///<workdir>/mlflow.db)")
    if not experiment_name:
        raise ConfigError("MLflow experiment name is empty")
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        exp = client.get_experiment_by_name(experiment_name)
        if exp is None:
            try:
                exp_id = client.create_experiment(
                    experiment_name, artifact_location=_artifact_uri(artifact_location)
                )
            except MlflowException:  # created concurrently by another process
                exp = client.get_experiment_by_name(experiment_name)
                if exp is None:
                    raise
                exp_id = exp.experiment_id
        else:
            exp_id = exp.experiment_id
            if exp.lifecycle_stage == "deleted":
                client.restore_experiment(exp_id)
    except MlflowException as e:
        raise ConfigError(
            f"MLflow tracking store {tracking_uri!r}: cannot set up experiment "
            f"{experiment_name!r}: {e.message}"
        ) from e
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def standard_tags(data_md5: str | None, git_commit: str | None, shards_uri: str | None,
                  num_workers: int | None) -> dict[str, str]:
    """The four run tags every seqflow run carries (values as strings; ``"unknown"`` for None).

    Keys exactly: ``data.dvc_md5`` (md5 in ``data.dvc``), ``git.commit``, ``shards.uri``
    (shard set folder/URI), ``ray.num_workers`` (Ray Train workers = world size).
    """
    def _s(v: Any) -> str:
        return "unknown" if v is None or v == "" else str(v)

    return {
        TAG_DATA_MD5: _s(data_md5),
        TAG_GIT_COMMIT: _s(git_commit),
        TAG_SHARDS_URI: _s(shards_uri),
        TAG_RAY_WORKERS: _s(num_workers),
    }


def _truncate(value: str, limit: int) -> str:
    if len(value) <= limit:
        return value
    return value[: max(0, limit - len(_TRUNCATION_MARK))] + _TRUNCATION_MARK


def flatten_params(cfg: Any, prefix: str = "", max_value_len: int = MAX_PARAM_VALUE_LEN) -> dict[str, str]:
    """Flatten a (Hydra/OmegaConf) config into MLflow params ``{"model.net.gru_hidden": "128", ...}``.

    Nested mappings become dotted keys; lists/tuples become compact JSON strings (``[-6, 3]``);
    None becomes ``"None"``. Values longer than ``max_value_len`` characters are cut and end in
    ``...[truncated]``; keys longer than MLflow's 250-char limit are cut the same way.
    Interpolations in a DictConfig are resolved first.

    Raises:
        omegaconf errors: an interpolation cannot be resolved.
    """
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(cfg, (DictConfig, ListConfig)):
            cfg = OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf ships with hydra
        pass
    out: dict[str, str] = {}

    def _walk(node: Any, key: str) -> None:
        if isinstance(node, Mapping):
            if not node and key:
                out[_truncate(key, MAX_PARAM_KEY_LEN)] = "{}"
            for k, v in node.items():
                _walk(v, f"{key}.{k}" if key else str(k))
            return
        if isinstance(node, (list, tuple)):
            text = json.dumps(list(node), separators=(", ", ": "), default=str)
        else:
            text = str(node)
        out[_truncate(key, MAX_PARAM_KEY_LEN)] = _truncate(text, max_value_len)

    _walk(cfg, prefix)
    return out


def log_params_batched(params: Mapping[str, Any], run_id: str | None = None,
                       client: MlflowClient | None = None) -> int:
    """Log ``params`` in batches of at most 100 (MLflow's per-call limit); returns how many.

    Logs to ``run_id`` (default: the active run). Values are stringified and truncated to
    ``MAX_PARAM_VALUE_LEN``.

    Raises:
        MlflowException: no active run and no ``run_id``, or a param already logged on the run
        with a different value (MLflow's message names the key).
    """
    from mlflow.entities import Param

    if run_id is None:
        active = mlflow.active_run()
        if active is None:
            raise MlflowException("log_params_batched: no active MLflow run and no run_id given")
        run_id = active.info.run_id
    client = client or MlflowClient()
    items = [Param(str(k), _truncate(str(v), MAX_PARAM_VALUE_LEN)) for k, v in params.items()]
    for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
        client.log_batch(run_id, params=items[i : i + MAX_PARAMS_PER_BATCH])
    return len(items)


def log_config_params(cfg: Any, run_id: str | None = None, client: MlflowClient | None = None) -> int:
    """``flatten_params(cfg)`` then ``log_params_batched``; returns the number of params logged."""
    return log_params_batched(flatten_params(cfg), run_id=run_id, client=client)


def start_training_run(cfg: Any, tags: Mapping[str, str], parent_run_id: str | None = None,
                       run_name: str | None = None) -> str:
    """Create the run a training job logs into (experiment ``seqflow/<model>`` set up from
    ``cfg.tracking``): the standard ``tags``, every config value as a param and the resolved
    config as ``config.yaml``. Returns the run id; the run is left for Ray workers to log to.

    ``parent_run_id``: nest the run under that run (tag ``mlflow.parentRunId``, which the MLflow UI
    shows as a child row; the parent need not be active). ``run_name``: MLflow's run name
    (default: a generated one)."""
    from omegaconf import OmegaConf

    setup_mlflow(cfg.tracking.tracking_uri, cfg.tracking.artifact_location,
                 experiment_name(cfg.model.name, cfg.tracking.experiment_prefix))
    tags = {**dict(tags), **({TAG_PARENT_RUN: str(parent_run_id)} if parent_run_id else {})}
    with mlflow.start_run(tags=tags, run_name=run_name) as run:
        log_config_params(cfg, run_id=run.info.run_id)
        mlflow.log_dict(OmegaConf.to_container(cfg, resolve=True), "config.yaml")
        return run.info.run_id


def child_runs(parent_run_id: str) -> list:
    """The runs nested under ``parent_run_id`` (tag ``mlflow.parentRunId``), oldest first."""
    client = MlflowClient()
    exp_id = client.get_run(parent_run_id).info.experiment_id
    runs = client.search_runs([exp_id], filter_string=f"tags.`{TAG_PARENT_RUN}` = '{parent_run_id}'")
    return sorted(runs, key=lambda r: r.info.start_time)


def use_store(tracking_uri: str) -> None:
    """Point this process at ``tracking_uri`` (stages may run in a fresh process, e.g. a retry)."""
    mlflow.set_tracking_uri(tracking_uri)


def run_params(run_id: str) -> dict[str, str]:
    """The params of ``run_id``."""
    return dict(MlflowClient().get_run(run_id).data.params)


def run_metrics(run_id: str) -> dict[str, float]:
    """The latest value of every metric of ``run_id``."""
    return dict(MlflowClient().get_run(run_id).data.metrics)


def log_model_to_run(run_id: str, log_model, *args):
    """Call ``log_model(*args)`` (an MLflow ``log_model``) inside run ``run_id``; returns its ModelInfo."""
    with mlflow.start_run(run_id=run_id):
        return log_model(*args)
