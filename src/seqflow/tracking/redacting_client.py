"""The MLflow client seqflow writes through: every param, tag, description and text artifact
passes :mod:`seqflow.tracking.redact` on its way to the store (the one choke point).

:class:`RedactingClient` is an ``MlflowClient`` whose writing methods redact first:

* run params and tags (``create_run``, ``log_param``, ``set_tag``, ``log_batch``; metrics pass
  unchanged), experiment tags;
* registered model and model version descriptions and tags;
* artifacts: ``log_dict`` redacts the structure (:func:`~seqflow.tracking.redact.redact_config`:
  secret-named keys too), and every text file that ``log_artifact`` / ``log_artifacts`` upload
  (``log_text`` and ``log_dict`` end there) is uploaded redacted — from a temporary copy, the local
  file is never changed. A file is text when its first 8 KiB hold no NUL byte and it decodes as
  UTF-8; binary files (checkpoints, ONNX, images) and text files over 64 MiB go as they are.

:func:`mlflow_logger` builds Lightning's ``MLFlowLogger`` on this client, its hyperparameters
redacted before Lightning cuts them to 250 characters (a cut secret would no longer match).

Not covered: what MLflow's fluent API writes on its own (``mlflow.pyfunc.log_model``: seqflow
logs there only a serving package it first downloaded from a run, i.e. already redacted, plus
MLflow's own ``MLmodel`` / requirements files), and values inside binary files.

>>> client = RedactingClient("sqlite:///mlflow.db")
>>> client.set_tag(run_id, "data.uri", "s3://AKIAIOSFODNN7EXAMPLE:pw@minio/b")   # stored redacted
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlflow.entities import Param, RunTag
from mlflow.tracking import MlflowClient

from seqflow.tracking.redact import redact, redact_config, redact_mapping, redact_value

MAX_TEXT_BYTES = 64 * 2**20   # larger files are uploaded as they are
_SNIFF_BYTES = 8192


def redacted_text(path: Path) -> str | None:
    """The redacted content of the text file ``path`` when redaction changes it, else None
    (binary, too large, unreadable, or nothing to hide)."""
    try:
        if path.stat().st_size > MAX_TEXT_BYTES:
            return None
        with open(path, "rb") as f:
            head = f.read(_SNIFF_BYTES)
            if b"\0" in head:
                return None
            text = (head + f.read()).decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    out = redact(text)
    return out if out != text else None


def _optional(items: Mapping[str, Any] | None) -> dict[str, str] | None:
    return None if items is None else redact_mapping(items)


def _text(value: str | None) -> str | None:
    return None if value is None else redact(str(value))


class RedactingClient(MlflowClient):
    """``MlflowClient(tracking_uri, registry_uri)`` whose writes are redacted (module doc).
    Reads are MLflow's own; the redaction is idempotent, so values already redacted pass unchanged."""

    # -- runs ------------------------------------------------------------------------------------
    def create_run(self, experiment_id: str, start_time: int | None = None, tags: dict[str, Any] | None = None,
                   run_name: str | None = None):
        return super().create_run(experiment_id, start_time=start_time, tags=_optional(tags),
                                  run_name=_text(run_name))

    def log_param(self, run_id: str, key: str, value: Any, synchronous: bool | None = None):
        return super().log_param(run_id, key, redact_value(key, value), synchronous=synchronous)

    def set_tag(self, run_id: str, key: str, value: Any, synchronous: bool | None = None):
        return super().set_tag(run_id, key, redact_value(key, value), synchronous=synchronous)

    def log_batch(self, run_id: str, metrics: Sequence = (), params: Sequence[Param] = (),
                  tags: Sequence[RunTag] = (), synchronous: bool | None = None):
        params = [Param(p.key, redact_value(p.key, p.value)) for p in params]
        tags = [RunTag(t.key, redact_value(t.key, t.value)) for t in tags]
        return super().log_batch(run_id, metrics=metrics, params=params, tags=tags, synchronous=synchronous)

    def set_experiment_tag(self, experiment_id: str, key: str, value: Any) -> None:
        return super().set_experiment_tag(experiment_id, key, redact_value(key, value))

    # -- artifacts -------------------------------------------------------------------------------
    def log_dict(self, run_id: str, dictionary: Any, artifact_file: str) -> None:
        return super().log_dict(run_id, redact_config(dictionary), artifact_file)   # then log_artifact

    def log_artifact(self, run_id, local_path, artifact_path=None) -> None:
        src = Path(local_path)
        text = redacted_text(src) if src.is_file() else None
        if text is None:
            return super().log_artifact(run_id, local_path, artifact_path)
        with tempfile.TemporaryDirectory(prefix="seqflow-redact-") as tmp:
            dst = Path(tmp) / src.name
            dst.write_text(text, encoding="utf-8")
            return super().log_artifact(run_id, str(dst), artifact_path)

    def log_artifacts(self, run_id: str, local_dir: str, artifact_path: str | None = None) -> None:
        root = Path(local_dir)
        changed = {p: t for p in sorted(root.rglob("*")) if p.is_file() and (t := redacted_text(p)) is not None}
        if not changed:
            return super().log_artifacts(run_id, local_dir, artifact_path)
        with tempfile.TemporaryDirectory(prefix="seqflow-redact-") as tmp:
            copy = Path(tmp) / root.name
            shutil.copytree(root, copy, copy_function=_link_or_copy)
            for p, text in changed.items():
                dst = copy / p.relative_to(root)
                dst.unlink()   # a hard link: never write through to the original
                dst.write_text(text, encoding="utf-8")
            return super().log_artifacts(run_id, str(copy), artifact_path)

    # -- registry --------------------------------------------------------------------------------
    def create_registered_model(self, name: str, tags: dict[str, Any] | None = None, description: str | None = None,
                                **kwargs):
        return super().create_registered_model(name, tags=_optional(tags), description=_text(description), **kwargs)

    def update_registered_model(self, name: str, description: str | None = None, **kwargs):
        return super().update_registered_model(name, description=_text(description), **kwargs)

    def create_model_version(self, name: str, source: str, run_id: str | None = None,
                             tags: dict[str, Any] | None = None, run_link: str | None = None,
                             description: str | None = None, **kwargs):
        return super().create_model_version(name, source, run_id=run_id, tags=_optional(tags), run_link=run_link,
                                            description=_text(description), **kwargs)

    def update_model_version(self, name: str, version: str, description: str | None = None):
        return super().update_model_version(name, version, description=_text(description))

    def set_registered_model_tag(self, name, key, value) -> None:
        return super().set_registered_model_tag(name, key, redact_value(key, value))

    def set_model_version_tag(self, name: str, version: str | None = None, key: str | None = None,
                              value: Any = None, stage: str | None = None) -> None:
        return super().set_model_version_tag(name, version, key, redact_value(str(key), value), stage)


def _link_or_copy(src: str, dst: str) -> str:
    """``shutil.copytree``'s copy function: a hard link (no copy of large files), else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def mlflow_logger(tracking_uri: str, run_id: str, experiment_name: str, **kwargs):
    """Lightning's ``MLFlowLogger`` for ``run_id`` writing through :class:`RedactingClient`, its
    hyperparameters redacted before Lightning's 250-character cut (``kwargs``: MLFlowLogger's,
    e.g. ``log_model=False``)."""
    from lightning.pytorch.loggers import MLFlowLogger
    from lightning.fabric.utilities.logger import _convert_params, _flatten_dict

    class _RedactingMLFlowLogger(MLFlowLogger):
        def log_hyperparams(self, params) -> None:
            flat = _flatten_dict(_convert_params(params))
            super().log_hyperparams({k: redact_value(k, v) for k, v in flat.items()})

    logger = _RedactingMLFlowLogger(tracking_uri=tracking_uri, run_id=run_id, experiment_name=experiment_name, **kwargs)
    logger._mlflow_client = RedactingClient(tracking_uri)   # Lightning's own client, replaced (see test)
    return logger
