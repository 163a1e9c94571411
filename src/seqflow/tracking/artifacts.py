"""Moving stage results in and out of an MLflow run: the one place stages touch artifacts.

The run's artifacts are how results cross Prefect tasks (no temp folders shared between tasks):
the package step logs ``package/``, evaluate and register download that same folder.

>>> log_results("abc123", metrics={"test/frr": 0.4}, tags={"eval.test_set": "sha256:..."},
...             folders={"package": Path("pkg")}, files={"plots": [Path("det.png")]},
...             documents={"evaluation/det_curve.json": curve})
>>> with downloaded("runs:/abc123/package") as pkg: ...
>>> log_best_checkpoint("abc123", Path("ray_results/.../checkpoint.ckpt"), {"epoch": 3, "val/loss": 0.21})
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, RunTag

from seqflow.tracking.redacting_client import RedactingClient

_MAX_PER_BATCH = 100  # MLflow's log_batch limit for tags (1000 for metrics)


def log_results(run_id: str, metrics: Mapping[str, float] | None = None, tags: Mapping[str, str] | None = None,
                folders: Mapping[str, Path] | None = None, files: Mapping[str, Sequence[Path]] | None = None,
                documents: Mapping[str, Any] | None = None) -> None:
    """Log onto an existing run: metrics (step 0), tags, whole ``folders`` (``{artifact path: local
    dir}``), ``files`` (``{artifact folder: [paths]}``) and JSON ``documents`` (``{artifact file: obj}``).

    Goes through :class:`~seqflow.tracking.redacting_client.RedactingClient` with ``run_id``: tags,
    JSON documents and text files are redacted on the way (credentials never reach the store; the
    local files are left as they are); the run's status is left as it is (a run still RUNNING while
    Ray workers train stays RUNNING), and nothing depends on an active run. Artifacts go wherever
    the run's artifact URI points (through the server for ``mlflow-artifacts:``).
    """
    client = RedactingClient()
    now = int(time.time() * 1000)
    metric_objs = [Metric(str(k), float(v), now, 0) for k, v in (metrics or {}).items()]
    tag_objs = [RunTag(str(k), str(v)) for k, v in (tags or {}).items()]
    for i in range(0, max(len(metric_objs), len(tag_objs)), _MAX_PER_BATCH):
        client.log_batch(run_id, metrics=metric_objs[i:i + _MAX_PER_BATCH], tags=tag_objs[i:i + _MAX_PER_BATCH])
    for artifact_path, folder in (folders or {}).items():
        client.log_artifacts(run_id, str(folder), artifact_path)
    for artifact_path, paths in (files or {}).items():
        for p in paths:
            client.log_artifact(run_id, str(p), artifact_path)
    for name, doc in (documents or {}).items():
        client.log_dict(run_id, doc, name)


CHECKPOINT_DIR = "checkpoints"
BEST_CHECKPOINT = f"{CHECKPOINT_DIR}/best.ckpt"
BEST_CHECKPOINT_INFO = f"{CHECKPOINT_DIR}/best.json"


def log_best_checkpoint(run_id: str, checkpoint_file: Path, info: Mapping[str, Any]) -> str:
    """Log the best Lightning checkpoint as ``checkpoints/best.ckpt`` of ``run_id``, with
    ``checkpoints/best.json`` (``info``: which epoch, the monitored metric and its value, where Ray
    Train kept it). Against a tracking server the file is uploaded through it. Returns the
    artifact path ``checkpoints/best.ckpt``.

    Raises:
        FileNotFoundError: ``checkpoint_file`` does not exist (message names it).
    """
    src = Path(checkpoint_file)
    if not src.is_file():
        raise FileNotFoundError(f"best checkpoint {src} does not exist; cannot log it on run {run_id}")
    with tempfile.TemporaryDirectory(prefix="seqflow-ckpt-") as tmp:
        dst = Path(tmp) / Path(BEST_CHECKPOINT).name
        try:  # same file system: a hard link, no copy of a large checkpoint
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)
        log_results(run_id, files={CHECKPOINT_DIR: [dst]}, documents={BEST_CHECKPOINT_INFO: dict(info)})
    return BEST_CHECKPOINT


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
