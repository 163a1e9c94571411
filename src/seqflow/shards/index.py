"""A split's ``index.json``: written after its tars, read by the loader, checked before reuse.

``{"split", "num_samples", "num_seconds", "format", "shards": [{"name", "num_samples", "num_seconds",
"sha256", "bytes"}], "data_md5", "config_hash", "duration_percentiles"}``; ``duration_percentiles``
holds the 0th..100th percentile of the sample durations [s] (101 values), from which the loader's
duration buckets are cut (:func:`seqflow.shards.bucketing.bucket_boundaries`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from seqflow.audio.io import write_bytes_atomic
from seqflow.errors import ShardError

INDEX_NAME = "index.json"


def load_index(index: str | Path | dict) -> tuple[dict, Path]:
    """``(index dict, folder of the tars)`` from an ``index.json`` path (or an already-loaded dict,
    whose folder is then the current directory).

    Raises:
        ShardError: the file is missing or not JSON.
    """
    if isinstance(index, dict):
        return index, Path(".")
    path = Path(index)
    try:
        return json.loads(path.read_text()), path.parent
    except (OSError, ValueError) as exc:
        raise ShardError(f"{path}: cannot read shard index ({exc})") from exc


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def duration_percentiles(seconds: Sequence[float]) -> list[float]:
    """The 0th, 1st, ..., 100th percentile of ``seconds`` (101 values, ms precision); [] when empty."""
    if len(seconds) == 0:
        return []
    return [round(float(q), 3) for q in np.percentile(np.asarray(seconds, dtype=np.float64), np.arange(101))]


def finish_index(folder: Path, stats: list[dict], split: str, fmt: str, data_md5: str, config_hash: str,
                 seconds: Sequence[float] | None = None) -> dict:
    """Write ``folder/index.json`` for the tars listed in ``stats`` (``name``, ``num_samples``,
    ``num_seconds``) and return it; ``seconds``: every sample's duration, for ``duration_percentiles``."""
    entries = [{"name": s["name"], "num_samples": s["num_samples"], "num_seconds": round(s["num_seconds"], 3),
                "sha256": sha256_file(folder / s["name"]), "bytes": (folder / s["name"]).stat().st_size}
               for s in stats]
    index = {"split": split, "num_samples": sum(e["num_samples"] for e in entries),
             "num_seconds": round(sum(s["num_seconds"] for s in stats), 3), "format": fmt, "shards": entries,
             "data_md5": data_md5, "config_hash": config_hash}
    if seconds is not None:
        index["duration_percentiles"] = duration_percentiles(seconds)
    write_bytes_atomic(folder / INDEX_NAME, (json.dumps(index, indent=1, sort_keys=True) + "\n").encode())
    return index


def verify_index(index_path: str | Path, check_sha256: bool = True) -> list[str]:
    """Problems with a split's shards, empty when complete: unreadable ``index.json``, a missing
    tar, a size or sha256 different from the index, or sample counts that do not add up."""
    index_path = Path(index_path)
    try:
        index = json.loads(index_path.read_text())
        entries = index["shards"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [f"{index_path}: unreadable index ({exc})"]
    problems = []
    for e in entries:
        p = index_path.parent / e["name"]
        if not p.is_file():
            problems.append(f"{p}: missing")
        elif p.stat().st_size != e["bytes"]:
            problems.append(f"{p}: {p.stat().st_size} bytes, index says {e['bytes']}")
        elif check_sha256 and sha256_file(p) != e["sha256"]:
            problems.append(f"{p}: sha256 differs from index")
    if sum(e["num_samples"] for e in entries) != index.get("num_samples"):
        problems.append(f"{index_path}: shard sample counts do not add up to num_samples")
    return problems
