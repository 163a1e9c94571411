"""Evaluation sets beyond the test split: real recordings and the held-out TTS engine.

``cfg.evaluate.sets`` lists named NeMo-JSONL manifests (``audio_filepath``, ``duration``, ``text``,
optional ``lang``, ``speaker``, ``split``), each with ``kinds`` (``asr``, ``trigger_word``) saying
what it can measure. Every set is split deterministically into a ``dev`` half and an ``eval``
half (the manifest's ``split`` field, else by speaker, else by file): choices may look at
``dev`` only; the ``eval/<set>/*`` metrics are computed on the ``eval`` half only.

A set whose manifest is absent is skipped with one log line; a manifest whose audio files are
missing is an error before training (:func:`check_eval_sets`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqflow.errors import ConfigError

log = logging.getLogger("seqflow.evaluate")
KINDS = ("asr", "trigger_word")
HALVES = ("dev", "eval")


@dataclass
class EvalSet:
    """One named evaluation set: ``rows`` are the manifest's JSON objects (paths absolute)."""

    name: str
    manifest: Path
    kinds: tuple[str, ...]
    rows: list[dict[str, Any]] = field(default_factory=list)

    def half(self, which: str = "eval") -> list[dict[str, Any]]:
        """The rows of the ``dev`` or ``eval`` half."""
        if which not in HALVES:
            raise ValueError(f"half must be one of {HALVES}, got {which!r}")
        return [r for r in self.rows if r["split"] == which]

    def content_hash(self) -> str:
        """sha256 over the sorted (audio path name, duration, text, split) rows: tagged on runs as
        ``eval.<name>.sha256`` so two numbers are known to come from the same set."""
        items = sorted((Path(r["audio_filepath"]).name, round(float(r.get("duration", 0.0)), 3),
                        str(r.get("text", "")), r["split"]) for r in self.rows)
        return hashlib.sha256(json.dumps(items).encode()).hexdigest()


def assign_half(row: Mapping[str, Any]) -> str:
    """``dev`` or ``eval`` for a manifest row without a ``split``: by speaker where known, else by
    file name (crc32, so stable across runs and machines)."""
    from seqflow.evalsets.splits import hash_split

    return hash_split(str(row.get("speaker") or Path(str(row["audio_filepath"])).name))


def read_set(name: str, manifest: str | Path, kinds: Sequence[str]) -> EvalSet:
    """Read a set's manifest; relative audio paths resolve against the manifest's folder.

    Raises:
        ConfigError: unknown kind, a line that is not JSON or lacks ``audio_filepath``.
    """
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ConfigError(f"evaluate.sets[{name}].kinds: {bad} not in {KINDS}")
    path = Path(manifest)
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            audio = Path(row["audio_filepath"])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ConfigError(f"{path}:{n}: not a manifest line with audio_filepath ({e})") from e
        row["audio_filepath"] = str(audio if audio.is_absolute() else path.parent / audio)
        if row.get("split") not in HALVES:
            row["split"] = assign_half(row)
        rows.append(row)
    return EvalSet(name, path, tuple(kinds), rows)


def load_eval_sets(sets_cfg: Sequence[Mapping[str, Any]], kind: str | None = None) -> list[EvalSet]:
    """The configured sets whose manifest exists (of ``kind`` if given); absent ones are skipped
    with one log line each."""
    out = []
    for s in sets_cfg or []:
        kinds = tuple(s.get("kinds") or ())
        if kind is not None and kind not in kinds:
            continue
        manifest = Path(str(s["manifest"]))
        if not manifest.is_file():
            log.info("evaluation set %s skipped: %s does not exist (make eval-data builds it)", s["name"], manifest)
            continue
        out.append(read_set(str(s["name"]), manifest, kinds))
    return out


def check_eval_sets(sets: Sequence[EvalSet]) -> None:
    """Every audio file of every set exists.

    Raises:
        ConfigError: naming the set, how many files are missing and the first few.
    """
    for es in sets:
        missing = [r["audio_filepath"] for r in es.rows if not Path(r["audio_filepath"]).is_file()]
        if missing:
            raise ConfigError(f"evaluation set {es.name} ({es.manifest}): {len(missing)} of {len(es.rows)} audio "
                              f"files missing, e.g. {missing[:3]}; rebuild it (make eval-data) or remove it "
                              "from evaluate.sets")


def set_tags(sets: Sequence[EvalSet]) -> dict[str, str]:
    """Run tags ``eval.<set>.sha256`` (content hash) for each set."""
    return {f"eval.{es.name}.sha256": es.content_hash() for es in sets}


def split_content_hash(samples: Sequence[tuple[str, Any, Mapping[str, Any]]]) -> str:
    """Identity of a shard split: sha256 over the sorted set of (key, sha256 of the decoded
    float32 samples, transcript). How the tars are cut, how many train clips there are, the
    number of Ray workers or the tokenizer do not change it, so versions stay comparable."""
    import numpy as np

    items = sorted((str(k), hashlib.sha256(np.ascontiguousarray(w, dtype=np.float32).tobytes()).hexdigest(),
                    str(m.get("text", ""))) for k, w, m in samples)
    return "sha256:" + hashlib.sha256(json.dumps(items).encode()).hexdigest()
