"""The ``manifest`` data source: NeMo-style JSONL manifests the user brings.

One JSON object a line::

    {"audio_filepath": "wavs/a.flac", "duration": 2.1, "text": "hello world", "speaker": "spk1", "split": "train"}

``audio_filepath`` and ``text`` are required; ``duration`` is optional (re-read from the file header);
``speaker``, ``split`` (``train``/``val``/``test``, also ``dev``/``validation``), ``kind`` (``utterance`` default,
or ``positive``/``negative``/``background`` for a trigger-word corpus) are optional; other keys are kept in the
row's ``extra``. Relative paths resolve against the manifest file's folder. ``data.path`` is one manifest, a list,
or ``{train: a.jsonl, val: b.jsonl, test: c.jsonl}`` (that split wins over the lines' ``split``).

Bad lines never crash the stage; each becomes a prepare-stage quarantine row with its 1-based line number:
``malformed_json`` (not JSON / not an object), ``missing_key`` (no ``audio_filepath`` or ``text``, or not a
string), ``bad_value`` (unknown ``split``/``kind``), ``unsupported_offset`` (NeMo ``offset`` segments of a
longer file), ``missing_file`` (the audio file does not exist).

>>> prepare_manifest(load_config(["data=manifest", "data.path=train.jsonl"]).data, 16000, 1234)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig

from seqflow.data.sources.common import (KINDS, Item, config_dict, quarantine_row, source_paths,
                                         speaker_fractions, split_name)
from seqflow.data.sources.corpus import build_corpus

log = logging.getLogger(__name__)

SOURCE = "manifest"
BUILD_KEYS = ("path", "speaker_split")
KNOWN = {"audio_filepath", "text", "duration", "speaker", "split", "kind"}


def _name(src: Path, base: Path) -> str:
    """Path under ``audio/<split>/``: relative to the manifest folder, or ``external/<parent>/<file>``."""
    if src.is_relative_to(base):
        return src.relative_to(base).as_posix()
    return f"external/{src.parent.name or 'root'}/{src.name}"


def _missing_key(row: dict, key: str, where: Path | str, manifest: Path, lineno: int) -> dict:
    got = "missing" if key not in row else f"{type(row[key]).__name__} {row[key]!r}"[:80]
    return quarantine_row(where, "missing_key", f"{manifest} line {lineno}: {key!r} is missing, empty or not "
                          f"a string ({got})", lineno)


def parse_line(line: str, lineno: int, manifest: Path, split: str | None) -> tuple[Item | None, dict | None]:
    """One manifest line -> ``(item, None)`` or ``(None, quarantine row)``; blank lines give ``(None, None)``."""
    where = f"{manifest}:{lineno}"
    if not line.strip():
        return None, None
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        return None, quarantine_row(where, "malformed_json", f"{manifest} line {lineno}: {exc.msg} "
                                    f"(column {exc.colno})", lineno)
    if not isinstance(row, dict):
        return None, quarantine_row(where, "malformed_json", f"{manifest} line {lineno}: a JSON "
                                    f"{type(row).__name__}, not an object", lineno)
    if not isinstance(row.get("audio_filepath"), str) or not row["audio_filepath"].strip():
        return None, _missing_key(row, "audio_filepath", where, manifest, lineno)
    src = Path(row["audio_filepath"]).expanduser()
    src = (src if src.is_absolute() else manifest.parent / src).resolve()
    if not isinstance(row.get("text"), str):
        return None, _missing_key(row, "text", src, manifest, lineno)
    if split is None and row.get("split") is not None:
        split = split_name(row["split"])
        if split is None:
            return None, quarantine_row(src, "bad_value", f"{manifest} line {lineno}: unknown split "
                                        f"{row['split']!r} (use train, val or test)", lineno)
    kind = row.get("kind") or "utterance"
    if kind not in KINDS:
        return None, quarantine_row(src, "bad_value", f"{manifest} line {lineno}: unknown kind {kind!r} "
                                    f"(use {', '.join(KINDS)})", lineno)
    if row.get("offset") not in (None, 0, 0.0):
        return None, quarantine_row(src, "unsupported_offset", f"{manifest} line {lineno}: offset "
                                    f"{row['offset']!r}; cut segments into their own files", lineno)
    if not src.is_file():
        return None, quarantine_row(src, "missing_file", f"{manifest} line {lineno}: no such file "
                                    f"{row['audio_filepath']!r}", lineno)
    speaker = row.get("speaker")
    extra = {k: v for k, v in row.items() if k not in KNOWN}
    extra.update(origin=where, line=lineno)
    return Item(src, _name(src, manifest.parent.resolve()), row["text"],
                None if speaker in (None, "") else str(speaker), split, kind, extra), None


def scan_manifests(paths: list[tuple[Path, str | None]]) -> tuple[list[Item], list[dict]]:
    """Read every manifest (in ``data.path`` order, lines in file order) -> ``(items, quarantine rows)``.

    An unreadable manifest file (not UTF-8) becomes one ``malformed_json`` row naming the file.
    """
    items, bad = [], []
    for manifest, split in paths:
        try:
            lines = manifest.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            bad.append(quarantine_row(manifest, "malformed_json", f"{manifest}: cannot read ({exc})"[:300]))
            continue
        for lineno, line in enumerate(lines, start=1):
            item, row = parse_line(line, lineno, manifest, split)
            if item is not None:
                items.append(item)
            elif row is not None:
                bad.append(row)
    return items, bad


def prepare_manifest(cfg_data: DictConfig, sample_rate: int, seed: int, progress: bool = True) -> Path:
    """Ingest the NeMo JSONL manifest(s) in ``data.path`` into ``data.root``; returns ``manifest.jsonl``'s path.

    Raises:
        ConfigError: ``data.path`` unset or missing, bad ``data.speaker_split``.
        DataValidationError: no usable line (every line quarantined, or the manifests are empty), or more
            lines dropped than ``data.max_bad_fraction`` (counts per reason, quarantine file).
    """
    raw = config_dict(cfg_data)
    paths = source_paths(raw, SOURCE, want="file")
    frac = speaker_fractions(raw)
    items, bad = scan_manifests(paths)
    spec = {"path": [[str(p), s] for p, s in paths], "speaker_split": frac}
    where = ",".join(str(p) for p, _ in paths)
    return build_corpus(SOURCE, spec, items, bad, Path(str(raw["root"])), sample_rate, seed, frac, where, progress,
                        max_bad_fraction=raw.get("max_bad_fraction"))
