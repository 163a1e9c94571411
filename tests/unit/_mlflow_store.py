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
