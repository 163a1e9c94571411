"""A throw-away real MLflow store (SQLite + local artifacts) for tracking tests."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

import mlflow

from seqflow.tracking.runs import setup_mlflow

_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@contextlib.contextmanager
def mlflow_store(root: Path, experiment: str) -> Iterator[str]:
    """Point MLflow at ``sqlite:///<root>/mlflow.db`` with ``experiment`` set up; yields the URI and
    restores the tracking URI and environment afterwards."""
    saved = {k: os.environ.get(k) for k in _ENV}
    os.environ.pop("MLFLOW_REGISTRY_URI", None)
    uri = f"sqlite:///{root}/mlflow.db"
    setup_mlflow(uri, root / "mlartifacts", experiment)
    try:
        yield uri
    finally:
        mlflow.set_tracking_uri(None)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class _Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


@contextlib.contextmanager
def store_with_logged_model(root: Path, experiment: str = "seqflow/trigger_word") -> Iterator[tuple]:
    """:func:`mlflow_store` plus one real logged model (a tiny echo pyfunc, in its own run);
    yields ``(MlflowClient, model_uri)`` for registry tests."""
    from mlflow.tracking import MlflowClient

    with mlflow_store(root, experiment) as uri:
        with mlflow.start_run():
            info = mlflow.pyfunc.log_model(name="model", python_model=_Echo(), pip_requirements=["mlflow"])
        yield MlflowClient(uri), info.model_uri
