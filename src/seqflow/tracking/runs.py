"""MLflow set-up, the standard run tags, and config → params.

Every seqflow run lives in the experiment ``seqflow/<model>``, is named after what it trained
(``trigger_word_embedding-activate-35e1343``: model, trigger word or data source, data version) and
carries the tags ``data.dvc_md5``, ``git.commit``, ``shards.uri`` and ``ray.num_workers`` (DESIGN §6).

Against a tracking server (an ``http(s)://`` URI) every artifact goes through the server
(``mlflow-artifacts:`` URIs): ``tracking.artifact_location`` is for local stores only.

>>> exp_id = setup_mlflow("sqlite:///work/mlflow.db", "/work/mlartifacts", experiment_name("trigger_word"))
>>> with mlflow.start_run(experiment_id=exp_id):
...     mlflow.set_tags(standard_tags(md5, commit, "/work/shards/abc-123", 2))
...     log_config_params(cfg)
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from seqflow.errors import ConfigError
from seqflow.tracking.redact import redact_config, redact_mapping, redact_value

log = logging.getLogger("seqflow.tracking")

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
MAX_RUN_NAME_LEN = 250
SHORT_VERSION_LEN = 7  # data version in run names: the first 7 hex digits of the DVC md5, as git shortens


def experiment_name(model_name: str, prefix: str = "seqflow") -> str:
    """``seqflow/<model>`` — the experiment every run of ``model_name`` (cfg.model.name) goes to."""
    return f"{prefix}/{model_name}"


def is_server_uri(tracking_uri: str | None) -> bool:
    """True for a tracking server (``http://`` or ``https://``): artifacts then go through it."""
    return str(tracking_uri or "").lower().startswith(("http://", "https://"))


def short_version(data_md5: str | None) -> str:
    """``"35e1343b...d.dir"`` → ``"35e1343"``: the data version as run names show it
    (``"unknown"`` for None or empty)."""
    text = str(data_md5 or "").removesuffix(".dir")
    return text[:SHORT_VERSION_LEN] if text else "unknown"


def run_name(model_name: str, subject: str, data_md5: str | None, *suffix: str) -> str:
    """A descriptive MLflow run name: ``<model>-<subject>-<data version>[-<suffix>...]``.

    ``subject`` is the trigger word or the data source, slugged (``"Hey Jarvis"`` → ``hey-jarvis``);
    the data version is :func:`short_version` of the DVC md5. Cut to 250 characters (MLflow's limit).

    >>> run_name("trigger_word_embedding", "activate", "35e1343b7f0c.dir")
    'trigger_word_embedding-activate-35e1343'
    >>> run_name("trigger_word_embedding", "Hey Jarvis", "35e1343b7f0c.dir", "round", "2")
    'trigger_word_embedding-hey-jarvis-35e1343-round-2'
    """
    from seqflow.config import slug

    parts = [str(model_name), slug(subject), short_version(data_md5), *map(str, suffix)]
    return "-".join(parts)[:MAX_RUN_NAME_LEN]


def run_subject(cfg: Any) -> str:
    """What a run of ``cfg`` is about: the trigger word for trigger-word models
    (``cfg.data.trigger_word``), otherwise the data source (``synthetic``, ``librispeech``, ...)."""
    from seqflow.families import get_family

    if get_family(cfg).kind == "trigger_word" and cfg.data.get("trigger_word"):
        return str(cfg.data.trigger_word)
    return str(cfg.data.source)


def training_run_name(cfg: Any, data_md5: str | None, *suffix: str) -> str:
    """:func:`run_name` for ``cfg`` (model name, :func:`run_subject`, data version)."""
    return run_name(str(cfg.model.name), run_subject(cfg), data_md5, *suffix)


def _is_local_location(location: str | None) -> bool:
    """A plain path or ``file:`` URI: a folder on whichever machine logs, not one the server serves."""
    loc = str(location or "")
    return loc.startswith("file:") or (bool(loc) and "://" not in loc and not loc.startswith("mlflow-artifacts:"))


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
    URI unless ``MLFLOW_REGISTRY_URI`` is set.

    A missing experiment is created; a deleted one is restored; an existing one keeps its own
    artifact location. Where a new experiment's artifacts go:

    * local store (``sqlite:///...``, ``file:...``): ``artifact_location``, a local folder (e.g.
      ``<workdir>/mlartifacts``, made an absolute ``file://`` URI) or an object-store URI
      (``s3://bucket/mlartifacts``);
    * tracking server (``http(s)://``): ``artifact_location`` is ignored and the server chooses
      (``mlflow-artifacts:/<experiment id>`` when it serves artifacts, the default), so artifacts
      are uploaded through the server and every machine reads them back through it.

    Returns:
        The experiment id (str).
    Raises:
        ConfigError: empty tracking URI or experiment name; the store cannot be reached (message
        names the URI and MLflow's reason); on a tracking server, an existing experiment whose
        artifact location is a local path or ``file:`` URI (artifacts would bypass the server).
    """
    if not tracking_uri:
        raise ConfigError("tracking.tracking_uri is empty; set it (e.g. sqlite:///<workdir>/mlflow.db)")
    if not experiment_name:
        raise ConfigError("MLflow experiment name is empty")
    server = is_server_uri(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        exp = client.get_experiment_by_name(experiment_name)
        if exp is None:
            try:
                exp_id = client.create_experiment(
                    experiment_name, artifact_location=None if server else _artifact_uri(artifact_location)
                )
                if server:
                    log.info("experiment %s created on %s; artifacts at %s", experiment_name, tracking_uri,
                             client.get_experiment(exp_id).artifact_location)
            except MlflowException:  # created concurrently by another process
                exp = client.get_experiment_by_name(experiment_name)
                if exp is None:
                    raise
                exp_id = exp.experiment_id
        else:
            exp_id = exp.experiment_id
            if exp.lifecycle_stage == "deleted":
                client.restore_experiment(exp_id)
        if server:
            location = client.get_experiment(exp_id).artifact_location
            if _is_local_location(location):
                raise ConfigError(
                    f"MLflow experiment {experiment_name!r} on {tracking_uri} stores artifacts at {location}, "
                    "a local path, so they would bypass the server; use a new experiment "
                    "(tracking.experiment_prefix=...) or rename this one in the MLflow UI")
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
    Interpolations in a DictConfig are resolved first. Credentials (URI passwords, tokens,
    secret-named keys) are replaced by ``[redacted]`` before cutting (:mod:`seqflow.tracking.redact`).

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
        out[_truncate(key, MAX_PARAM_KEY_LEN)] = _truncate(redact_value(key, text), max_value_len)  # before cutting

    _walk(cfg, prefix)
    return out


def log_params_batched(params: Mapping[str, Any], run_id: str | None = None,
                       client: MlflowClient | None = None) -> int:
    """Log ``params`` in batches of at most 100 (MLflow's per-call limit); returns how many.

    Logs to ``run_id`` (default: the active run). Values are stringified, redacted
    (:func:`seqflow.tracking.redact.redact_value`) and truncated to ``MAX_PARAM_VALUE_LEN``.

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
    items = [Param(k, _truncate(v, MAX_PARAM_VALUE_LEN)) for k, v in redact_mapping(params).items()]
    for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
        client.log_batch(run_id, params=items[i : i + MAX_PARAMS_PER_BATCH])
    return len(items)


def log_config_params(cfg: Any, run_id: str | None = None, client: MlflowClient | None = None) -> int:
    """``flatten_params(cfg)`` then ``log_params_batched``; returns the number of params logged."""
    return log_params_batched(flatten_params(cfg), run_id=run_id, client=client)


def start_training_run(cfg: Any, tags: Mapping[str, str], parent_run_id: str | None = None,
                       run_name: str | None = None, keep_running: bool = True) -> str:
    """Create the run a training job logs into (experiment ``seqflow/<model>`` set up from
    ``cfg.tracking``): the standard ``tags``, every config value as a param and the resolved
    config as ``config.yaml``, all three with credentials redacted. Returns the run id.

    ``keep_running`` (default): the run stays RUNNING for the Ray workers to log into (Lightning's
    ``MLFlowLogger`` marks it FINISHED when fitting ends; :func:`end_run` marks a failure); False:
    the run is ended (FINISHED) here, e.g. a parent run that only groups other runs.
    ``parent_run_id``: nest the run under that run (tag ``mlflow.parentRunId``, which the MLflow UI
    shows as a child row; the parent need not be active). ``run_name``: MLflow's run name
    (default: a generated one; see :func:`training_run_name`).

    Raises:
        ConfigError: the store cannot be reached or its experiment cannot be used (see setup_mlflow).
    """
    from mlflow.tracking.context.registry import resolve_tags
    from omegaconf import OmegaConf

    exp_id = setup_mlflow(cfg.tracking.tracking_uri, cfg.tracking.artifact_location,
                          experiment_name(cfg.model.name, cfg.tracking.experiment_prefix))
    tags = {**dict(tags), **({TAG_PARENT_RUN: str(parent_run_id)} if parent_run_id else {})}
    client = MlflowClient(tracking_uri=cfg.tracking.tracking_uri)
    run = client.create_run(exp_id, tags=redact_mapping(resolve_tags(tags)), run_name=run_name)  # git remote URL too
    run_id = run.info.run_id
    try:
        log_config_params(cfg, run_id=run_id, client=client)
        client.log_dict(run_id, redact_config(OmegaConf.to_container(cfg, resolve=True)), "config.yaml")
    except Exception:
        client.set_terminated(run_id, "FAILED")
        raise
    if not keep_running:
        client.set_terminated(run_id, "FINISHED")
    return run_id


def end_run(run_id: str, status: str = "FINISHED") -> None:
    """Mark ``run_id`` ended with ``status`` (``FINISHED``, ``FAILED``, ``KILLED``)."""
    MlflowClient().set_terminated(run_id, status)


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
