"""The ``librispeech`` data source: the LibriSpeech ``*.trans.txt`` layout::

    <path>/[train-clean-100/]<speaker>/<chapter>/<speaker>-<chapter>.trans.txt
    <path>/[train-clean-100/]<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac   (or .wav/.ogg/...)

Each transcript line is ``<utterance id> <TEXT>`` (raw; normalisation happens later). The speaker is the id's
first ``-`` field (the speaker folder). The split comes from ``data.path={train: ..., val: ..., test: ...}``,
else from a subset folder on the way (``train-*`` -> train, ``dev-*`` -> val, ``test-*`` -> test), else by
speaker (``data.speaker_split``).

Quarantined at prepare (rows name the file and the 1-based transcript line): ``malformed_transcript`` (a line
without an id and text, or a transcript file that is not UTF-8), ``missing_file`` (no audio for an id),
``missing_transcript`` (audio in a chapter folder that no transcript line names, or in a folder without a
``*.trans.txt``), ``unsupported_format`` (a file in a chapter folder the source does not read, e.g. ``.m4a``;
one row when a transcript line names it). Files outside chapter folders that are not audio (``README.TXT``,
``SPEAKERS.TXT``...) are not data and are skipped.

>>> prepare_librispeech(load_config(["data=librispeech", "data.path=LibriSpeech"]).data, 16000, 1)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from seqflow.audio.io import AUDIO_SUFFIXES
from seqflow.data.sources.common import (Item, is_audio, quarantine_row, split_from_folders, unsupported_row,
                                         walk_audio, walk_files)
from seqflow.data.sources.corpus import prepare_from_folders

log = logging.getLogger(__name__)

SOURCE = "librispeech"
TRANS_SUFFIX = ".trans.txt"


def _audio_for(utt_id: str, audio: dict[str, Path]) -> Path | None:
    """The audio file of ``utt_id`` (``audio``: ``<stem><lower-case suffix>`` -> path), ``.flac`` preferred."""
    for suffix in (".flac",) + AUDIO_SUFFIXES:
        p = audio.get(utt_id + suffix)
        if p is not None:
            return p
    return None


def scan_transcripts(base: Path, split: str | None, exclude: Path) -> tuple[list[Item], list[dict]]:
    """Scan one LibriSpeech tree (every ``*.trans.txt`` under ``base``, sorted) -> ``(items, quarantine rows)``."""
    items, bad = [], []
    label = base.name
    chapters: set[Path] = set()
    for trans in sorted(base.rglob(f"*{TRANS_SUFFIX}"), key=lambda p: p.relative_to(base).as_posix()):
        if trans.resolve().is_relative_to(exclude) or any(x.startswith(".") for x in trans.relative_to(base).parts):
            continue
        folder = trans.parent
        files = [p for p in walk_files(folder, recursive=False) if not p.name.endswith(TRANS_SUFFIX)]
        audio = {p.stem + p.suffix.lower(): p for p in files if is_audio(p)}
        unread = {p.stem: p for p in files if not is_audio(p)}
        used: set[Path] = set()
        folder_split = split or split_from_folders((base.name,) + folder.relative_to(base).parts)
        try:
            lines = trans.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            bad.append(quarantine_row(trans, "malformed_transcript", f"{trans}: cannot read ({exc})"[:300]))
            continue  # its audio files are listed below as missing_transcript
        chapters.add(folder)
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            parts = line.strip().split(maxsplit=1)
            if len(parts) < 2:
                bad.append(quarantine_row(f"{trans}:{lineno}", "malformed_transcript",
                                          f"{trans} line {lineno}: expected '<utterance id> <text>', got "
                                          f"{line.strip()[:60]!r}", lineno))
                continue
            utt_id, text = parts
            src = _audio_for(utt_id, audio)
            if src is None and utt_id in unread:
                used.add(unread[utt_id])
                bad.append(unsupported_row(unread[utt_id], lineno))
                continue
            if src is None:
                bad.append(quarantine_row(folder / f"{utt_id}.flac", "missing_file",
                                          f"{trans} line {lineno}: no audio file {utt_id}.* in {folder}", lineno))
                continue
            used.add(src)
            name = f"{label}/{src.relative_to(base).as_posix()}" if label else src.relative_to(base).as_posix()
            items.append(Item(src.resolve(), name, text, utt_id.split("-")[0], folder_split, "utterance",
                              {"id": utt_id, "origin": f"{trans}:{lineno}", "line": lineno}))
        for p in sorted(set(audio.values()) - used):
            bad.append(quarantine_row(p, "missing_transcript", f"{p.name}: no line in {trans.name} names "
                                      f"{p.stem!r}"))
        bad += [unsupported_row(p) for p in sorted(set(unread.values()) - used)]
    for p in walk_audio(base, exclude=exclude):
        if p.parent not in chapters:
            bad.append(quarantine_row(p, "missing_transcript", f"{p.name}: no *{TRANS_SUFFIX} in {p.parent}"))
    return items, bad


def prepare_librispeech(cfg_data: DictConfig, sample_rate: int, seed: int, progress: bool = True) -> Path:
    """Ingest the LibriSpeech-layout folder(s) in ``data.path`` into ``data.root``; returns ``manifest.jsonl``'s path.

    Raises:
        ConfigError: ``data.path`` unset / not a folder, bad ``data.speaker_split``.
        DataValidationError: no ``*.trans.txt`` line with its audio file, or more items dropped than
            ``data.max_bad_fraction`` (counts per reason, quarantine file).
    """
    return prepare_from_folders(cfg_data, SOURCE, scan_transcripts, sample_rate, seed, progress)
