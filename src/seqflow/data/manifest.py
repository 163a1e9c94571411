"""The corpus manifest: one JSON object a line (NeMo-style), kept apart from loaders.

Fields: ``audio_filepath`` (relative to the corpus root, or absolute), ``duration`` [s],
``text``, optional ``speaker``, ``split`` (train/val/test) and ``kind``
(``positive``/``negative``/``background`` for trigger-word corpora, ``utterance`` for ASR).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

from seqflow.audio.io import write_bytes_atomic

MANIFEST_NAME = "manifest.jsonl"
QUARANTINE_NAME = "quarantine.jsonl"


@dataclass
class Utterance:
    """One audio file of the corpus and what it contains."""

    audio_filepath: str
    duration: float
    text: str = ""
    speaker: str | None = None
    split: str = "train"
    kind: str = "utterance"
    extra: dict = field(default_factory=dict)

    def to_json(self) -> str:
        d = asdict(self)
        if not d["extra"]:
            d.pop("extra")
        return json.dumps(d, ensure_ascii=False, sort_keys=True)

    def resolve(self, root: str | os.PathLike) -> Path:
        """Absolute path of the audio file, relative paths resolved against ``root``."""
        p = Path(self.audio_filepath)
        return p if p.is_absolute() else Path(root) / p


def read_manifest(path: str | os.PathLike) -> list[Utterance]:
    """Read a seqflow manifest written by :func:`write_manifest`."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                d = json.loads(line)
                known = {k: d.pop(k) for k in list(d) if k in Utterance.__dataclass_fields__}
                known.setdefault("extra", {}).update(d)
                out.append(Utterance(**known))
    return out


def write_manifest(path: str | os.PathLike, utterances: Iterable[Utterance]) -> None:
    """Write utterances as JSONL atomically (temp + rename); deterministic bytes for equal input."""
    text = "".join(u.to_json() + "\n" for u in utterances)
    write_bytes_atomic(path, text.encode("utf-8"))


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    """Write plain dict rows as sorted-key JSONL atomically."""
    text = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)
    write_bytes_atomic(path, text.encode("utf-8"))


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read JSONL rows; a missing file reads as no rows."""
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
