"""The ``folder`` data source: audio files with a sibling transcript of the same stem::

    <path>/[<split>/][<speaker>/...]<name>.wav|.flac|.ogg|...
    <path>/[<split>/][<speaker>/...]<name>.txt        UTF-8 text (lines joined by a space; raw, normalised later)

The speaker is the first folder below ``<path>`` (after an optional split folder); files directly in ``<path>``
have no speaker. The split comes from ``data.path={train: ..., val: ..., test: ...}``, else from a folder named
``train``/``val``/``dev``/``test`` on the way, else by speaker (``data.speaker_split``; by file when there are
fewer than three speakers).

Quarantined at prepare (nothing under ``<path>`` vanishes silently): ``missing_transcript`` (audio without
``<stem>.txt``), ``unreadable_transcript`` (a ``.txt`` that is not UTF-8), ``unsupported_format`` (a file the
source does not read, e.g. ``.m4a``; its ``.txt`` goes with it), ``missing_audio`` (a ``.txt`` with no file of
its stem). Hidden files and ``README``/``LICENSE``-like files are skipped
(:func:`~seqflow.data.sources.common.is_ignored`). Empty transcripts are left to validate
(``empty_transcript``).

>>> prepare_folder(load_config(["data=folder", "data.path=recordings"]).data, 16000, 1)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from seqflow.data.sources.common import (Item, is_audio, quarantine_row, split_from_folders, unsupported_row,
                                         walk_files)
from seqflow.data.sources.corpus import prepare_from_folders

log = logging.getLogger(__name__)

SOURCE = "folder"


def read_transcript(path: Path) -> str:
    """Text of a ``.txt`` transcript: UTF-8 (BOM allowed), lines stripped and joined by one space.

    Raises:
        UnicodeDecodeError / OSError: not UTF-8 or unreadable.
    """
    return " ".join(line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip())


def scan_folder(base: Path, split: str | None, exclude: Path) -> tuple[list[Item], list[dict]]:
    """Scan one folder tree (sorted) -> ``(items, quarantine rows)``."""
    items, bad = [], []
    files = walk_files(base, exclude=exclude)
    stems = {p.with_suffix("") for p in files if p.suffix.lower() != ".txt"}
    for src in files:
        if src.suffix.lower() == ".txt":
            if src.with_suffix("") not in stems:
                bad.append(quarantine_row(src, "missing_audio", f"{src.name}: no audio file {src.stem}.* beside it"))
            continue
        if not is_audio(src):
            bad.append(unsupported_row(src))
            continue
        rel = src.relative_to(base)
        txt = src.with_suffix(".txt")
        if not txt.is_file():
            bad.append(quarantine_row(src, "missing_transcript", f"{src.name}: no {txt.name} beside it"))
            continue
        try:
            text = read_transcript(txt)
        except (OSError, UnicodeDecodeError) as exc:
            bad.append(quarantine_row(src, "unreadable_transcript", f"{txt}: {exc}"[:300]))
            continue
        folders = list(rel.parts[:-1])
        item_split = split or split_from_folders(folders)
        if folders and split_from_folders(folders[:1]):
            folders = folders[1:]  # a leading split folder is not a speaker
        items.append(Item(src.resolve(), rel.as_posix(), text, folders[0] if folders else None, item_split,
                          "utterance", {"transcript": str(txt)}))
    return items, bad


def prepare_folder(cfg_data: DictConfig, sample_rate: int, seed: int, progress: bool = True) -> Path:
    """Ingest the audio + ``.txt`` folder(s) in ``data.path`` into ``data.root``; returns ``manifest.jsonl``'s path.

    Raises:
        ConfigError: ``data.path`` unset / not a folder, bad ``data.speaker_split``.
        DataValidationError: no audio file with a transcript, or more files dropped than
            ``data.max_bad_fraction`` (counts per reason, quarantine file).
    """
    return prepare_from_folders(cfg_data, SOURCE, scan_folder, sample_rate, seed, progress)
