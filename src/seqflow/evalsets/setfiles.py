"""The files of one evaluation set folder, shared by the real-audio builders and festival.

A set folder holds::

    audio/<key with / as __>.flac   16 kHz mono 16-bit FLAC
    manifest.jsonl                  one row per utterance (NeMo style, sorted by key)
    quarantine.jsonl                files that could not be used: path, reason, detail
    set.json                        name, kinds, packages, counts, hours, content hash, build stamp

Manifest rows: ``audio_filepath`` (absolute), ``duration`` [s], ``text`` (normalised English or
``""``), ``lang``, ``speaker``, ``source``, ``split`` (``dev``/``eval``), ``key``,
``audio_sha256``. Every file is written atomically (temp + rename) and ``set.json`` last, so a
folder whose ``set.json`` matches the requested build is complete.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seqflow.audio.io import encode_audio, write_bytes_atomic
from seqflow.data.manifest import write_jsonl

SAMPLE_RATE = 16_000
MANIFEST = "manifest.jsonl"
QUARANTINE = "quarantine.jsonl"
SET_JSON = "set.json"
AUDIO_DIR = "audio"


def audio_name(key: str) -> str:
    """File name of a key's FLAC: ``/`` → ``__``, anything outside ``[A-Za-z0-9._+-]`` → ``_``."""
    return re.sub(r"[^A-Za-z0-9._+-]", "_", key.replace("/", "__")) + ".flac"


def write_flac(wav: np.ndarray, dest: Path) -> tuple[float, str]:
    """Write a ``(S,)`` float32 16 kHz waveform as 16-bit FLAC atomically.

    Returns:
        ``(duration [s], sha256 hex of the FLAC bytes)``.
    """
    data = encode_audio(wav, SAMPLE_RATE, "flac")
    write_bytes_atomic(dest, data)
    return round(len(wav) / SAMPLE_RATE, 4), hashlib.sha256(data).hexdigest()


def content_sha256(rows: Sequence[Mapping[str, Any]]) -> str:
    """sha256 over the sorted ``(audio_sha256, text, split)`` triples: equal for equal audio,
    transcripts and halves, whatever the folder, order or file names."""
    items = sorted((str(r["audio_sha256"]), str(r["text"]), str(r["split"])) for r in rows)
    return hashlib.sha256(json.dumps(items, ensure_ascii=False).encode("utf-8")).hexdigest()


def read_set_json(out_dir: Path) -> dict[str, Any] | None:
    """The folder's ``set.json`` when it and ``manifest.jsonl`` both exist and parse, else ``None``."""
    sj, mf = Path(out_dir) / SET_JSON, Path(out_dir) / MANIFEST
    if not (sj.is_file() and mf.is_file()):
        return None
    try:
        return json.loads(sj.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts and hours, overall and per split."""
    per = {s: [r for r in rows if r["split"] == s] for s in ("dev", "eval")}
    return {"num_utterances": len(rows),
            "hours": round(sum(r["duration"] for r in rows) / 3600.0, 4),
            "per_split": {s: {"num_utterances": len(v), "hours": round(sum(r["duration"] for r in v) / 3600.0, 4)}
                          for s, v in per.items()}}


def write_set(out_dir: Path, *, name: str, kinds: Sequence[str], packages: Mapping[str, str],
              rows: Sequence[dict[str, Any]], quarantine: Sequence[dict[str, Any]],
              build: Mapping[str, Any]) -> Path:
    """Write ``quarantine.jsonl``, ``manifest.jsonl`` (rows sorted by key), then ``set.json``.

    Args:
        out_dir: the set folder (audio already written under ``audio/``).
        name: set name, e.g. ``real_noise``.
        kinds: what the set measures (``asr``, ``trigger_word``).
        packages: ``{package: .deb file name}`` the audio came from.
        rows: manifest rows (see module doc).
        quarantine: ``{"path", "reason", "detail", ...}`` per unusable file.
        build: what the folder was built from (compared on reuse).

    Returns:
        The manifest path.
    """
    out_dir = Path(out_dir)
    rows = sorted(rows, key=lambda r: r["key"])
    write_jsonl(out_dir / QUARANTINE, quarantine)
    write_jsonl(out_dir / MANIFEST, rows)
    meta = {"name": name, "kinds": list(kinds), "packages": dict(packages), **summary(rows),
            "num_quarantined": len(quarantine), "content_sha256": content_sha256(rows), "build": dict(build)}
    write_bytes_atomic(out_dir / SET_JSON, (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return out_dir / MANIFEST
