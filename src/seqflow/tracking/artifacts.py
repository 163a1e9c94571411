"""Moving stage results in and out of an MLflow run: the one place stages touch artifacts.

The run's artifacts are how results cross Prefect tasks (no temp folders shared between tasks):
the package step logs ``package/``, evaluate and register download that same folder.

>>> log_results("abc123", metrics={"test/frr": 0.4}, tags={"eval.test_set": "sha256:..."},
...             folders={"package": Path("pkg")}, files={"plots": [Path("det.png")]},
...             documents={"evaluation/det_curve.json": curve})
>>> with downloaded("runs:/abc123/package") as pkg: ...
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow


def log_results(run_id: str, metrics: Mapping[str, float] | None = None, tags: Mapping[str, str] | None = None,
                folders: Mapping[str, Path] | None = None, files: Mapping[str, Sequence[Path]] | None = None,
                documents: Mapping[str, Any] | None = None) -> None:
    """Log onto an existing run: metrics, tags, whole ``folders`` (``{artifact path: local dir}``),
    ``files`` (``{artifact folder: [paths]}``) and JSON ``documents`` (``{artifact file: obj}``)."""
    with mlflow.start_run(run_id=run_id):
        if metrics:
            mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        if tags:
            mlflow.set_tags(dict(tags))
        for artifact_path, folder in (folders or {}).items():
            mlflow.log_artifacts(str(folder), artifact_path)
        for artifact_path, paths in (files or {}).items():
            for p in paths:
                mlflow.log_artifact(str(p), artifact_path)
        for name, doc in (documents or {}).items():
            mlflow.log_dict(doc, name)


@contextlib.contextmanager
def downloaded(uri: str, prefix: str = "seqflow-") -> Iterator[Path]:
    """Download ``uri`` (``runs:/…``, ``models:/…``) into a temporary folder that is removed on exit."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(mlflow.artifacts.download_artifacts(uri, dst_path=tmp))


def package_folder(model_dir: Path) -> Path:
    """The serving package inside a downloaded pyfunc model (its single ``artifacts/<name>`` folder).

    Raises:
        FileNotFoundError: none or several folders there.
    """
    found = sorted(p for p in (model_dir / "artifacts").glob("*") if p.is_dir())
    if len(found) != 1:
        raise FileNotFoundError(f"{model_dir}: expected one serving package folder under artifacts/, "
                                f"found {[p.name for p in found]}")
    return found[0]
