"""Shared pieces of the user data sources (``manifest``, ``librispeech``, ``folder``, ``speech_commands``).

A source *scans* its input into :class:`Item` rows (one planned corpus file each) plus prepare-stage quarantine
rows (:func:`quarantine_row`); :func:`seqflow.data.sources.corpus.build_corpus` writes them out. Here:
``data.path`` parsing (:func:`source_paths`: one path, a list, or ``{train: ..., val: ..., test: ...}``),
``data.speaker_split`` checking, split names from folders (``train``/``dev``/``test``, LibriSpeech subsets), audio
file walking, and :func:`assign_splits`: speakers ordered by ``sha256(seed:speaker)`` and cut by the fractions, so
speakers are disjoint across splits (with fewer than :data:`MIN_SPEAKERS` speakers it splits by file instead).

Errors: :class:`~seqflow.errors.ConfigError` for a bad ``data.path`` or ``data.speaker_split``.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from seqflow.audio.io import AUDIO_SUFFIXES
from seqflow.errors import ConfigError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
KINDS = ("positive", "negative", "background", "utterance")
MIN_SPEAKERS = 3  # fewer distinct speakers than this: split by file instead of by speaker
IGNORED_STEMS = frozenset({"readme", "license", "licence", "copying", "notice", "changelog"})  # never data
IGNORED_NAMES = frozenset({"thumbs.db", "desktop.ini"})
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "dev": "val", "test": "test", "testing": "test", "eval": "test"}


@dataclass
class Item:
    """One planned corpus file. ``name``: posix path under ``audio/<split>/`` keeping the source extension;
    ``split``: ``None`` until :func:`assign_splits`; ``extra``: provenance kept in the manifest row."""

    src: Path
    name: str
    text: str
    speaker: str | None = None
    split: str | None = None
    kind: str = "utterance"
    extra: dict = field(default_factory=dict)


def quarantine_row(audio_filepath: str | Path, reason: str, detail: str, line: int | None = None) -> dict:
    """A prepare-stage quarantine row; ``line`` (1-based) for rows that come from a text file line."""
    row = {"audio_filepath": str(audio_filepath), "reason": reason, "detail": detail, "stage": "prepare"}
    if line is not None:
        row["line"] = int(line)
    return row


def config_dict(cfg_data: DictConfig | dict) -> dict:
    """``cfg.data`` as a plain resolved dict."""
    return OmegaConf.to_container(cfg_data, resolve=True) if isinstance(cfg_data, DictConfig) else dict(cfg_data)


def split_name(value: object) -> str | None:
    """``"dev"``/``"validation"``/... -> ``"val"`` etc.; ``None`` for anything that names no split."""
    return SPLIT_ALIASES.get(str(value).strip().lower()) if value is not None else None


def split_from_folders(parts: tuple[str, ...] | list[str]) -> str | None:
    """Split named by a folder on the way to a file: ``train``/``dev``/``test`` (and aliases) or a LibriSpeech
    subset such as ``train-clean-100``, ``dev-other``, ``test-clean``; the deepest such folder wins."""
    for part in reversed(list(parts)):
        name = part.lower()
        split = split_name(name) or split_name(name.split("-")[0] if "-" in name else None)
        if split:
            return split
    return None


def source_paths(raw: dict, source: str, want: str) -> list[tuple[Path, str | None]]:
    """``data.path`` as ``[(absolute path, split or None)]``.

    ``data.path`` is one path, a list of paths, or ``{train: ..., val: ..., test: ...}`` (each value one path or a
    list) that sets the split of everything found under it. ``want`` is ``"file"`` or ``"dir"``.

    Raises:
        ConfigError: ``data.path`` unset, an unknown split key, a path that does not exist or has the wrong type.
    """
    path = raw.get("path")
    if path in (None, "", [], {}):
        raise ConfigError(f"data.path is not set: e.g. seqflow pipeline data={source} data.path=/path/to/"
                          + ("train.jsonl" if want == "file" else "corpus"))
    if isinstance(path, dict):
        pairs = []
        for key, val in path.items():
            split = split_name(key)
            if split is None:
                raise ConfigError(f"data.path key {key!r} is not a split; use {', '.join(SPLITS)}")
            pairs += [(v, split) for v in (val if isinstance(val, list) else [val])]
        pairs.sort(key=lambda x: SPLITS.index(x[1]))
    else:
        pairs = [(v, None) for v in (path if isinstance(path, list) else [path])]
    out = []
    for val, split in pairs:
        p = Path(str(val)).expanduser().resolve()
        if not p.exists():
            raise ConfigError(f"data.path entry {p} does not exist")
        if (want == "file") != p.is_file():
            raise ConfigError(f"data.path entry {p} is not a {'file' if want == 'file' else 'folder'} "
                              f"(data={source} expects {'a manifest file' if want == 'file' else 'a folder'})")
        out.append((p, split))
    return out


def speaker_fractions(raw: dict) -> dict[str, float]:
    """``data.speaker_split`` checked: a fraction >= 0 for each split, ``train`` > 0.

    Raises:
        ConfigError: a missing split, a negative or non-numeric fraction, ``train`` <= 0.
    """
    frac = raw.get("speaker_split") or {}
    if (set(frac) != set(SPLITS) or any(isinstance(frac[s], bool) or not isinstance(frac[s], (int, float))
                                        or frac[s] < 0 for s in SPLITS) or frac["train"] <= 0):
        raise ConfigError(f"data.speaker_split must give a fraction >= 0 for each of {SPLITS} (train > 0), got {frac}")
    return {s: float(frac[s]) for s in SPLITS}


def is_ignored(path: Path) -> bool:
    """Files that are never data: :data:`IGNORED_STEMS` (``README.md``, ``LICENSE``, ...) and
    :data:`IGNORED_NAMES` (``Thumbs.db``, ``desktop.ini``), any case; never an audio file (:func:`is_audio`)."""
    return not is_audio(path) and (path.name.lower() in IGNORED_NAMES or path.stem.lower() in IGNORED_STEMS)


def walk_files(base: Path, exclude: Path | None = None, recursive: bool = True) -> list[Path]:
    """Every file under ``base``, sorted; hidden files/folders, anything under ``exclude`` (the corpus root) and
    :func:`is_ignored` files are skipped."""
    found = base.rglob("*") if recursive else base.glob("*")
    out = []
    for p in found:
        rel = p.relative_to(base).parts
        if (p.is_file() and not any(r.startswith(".") for r in rel) and not is_ignored(p)
                and not (exclude is not None and p.resolve().is_relative_to(exclude))):
            out.append(p)
    return sorted(out, key=lambda p: p.relative_to(base).as_posix())


def is_audio(path: Path) -> bool:
    """Suffix in :data:`~seqflow.audio.io.AUDIO_SUFFIXES` (any case): a file the sources read."""
    return path.suffix.lower() in AUDIO_SUFFIXES


def walk_audio(base: Path, exclude: Path | None = None, recursive: bool = True) -> list[Path]:
    """Audio files (:func:`is_audio`) of :func:`walk_files`."""
    return [p for p in walk_files(base, exclude, recursive) if is_audio(p)]


def unsupported_row(path: Path, line: int | None = None) -> dict:
    """Quarantine row ``unsupported_format`` for a file the source does not read (an ``.m4a``, a ``.pdf``...)."""
    return quarantine_row(path, "unsupported_format", f"{path.name}: {path.suffix or 'no extension'} is not read "
                          f"(readable: {', '.join(AUDIO_SUFFIXES)}); convert it, e.g. ffmpeg -i {path.name} "
                          f"{path.stem}.flac", line)


def _allocate(n: int, frac: dict[str, float]) -> tuple[int, int]:
    """``(n_val, n_test)`` of ``n`` groups; each split with a fraction > 0 gets one when ``n >= 3``; train >= 1."""
    total = sum(frac.values())
    n_val, n_test = (int(round(n * frac[s] / total)) for s in ("val", "test"))
    if n >= 3:
        n_val, n_test = (max(1, k) if frac[s] > 0 else k for k, s in ((n_val, "val"), (n_test, "test")))
    while n_val + n_test > max(n - 1, 0):
        if n_test >= n_val:
            n_test -= 1
        else:
            n_val -= 1
    return n_val, n_test


def assign_splits(items: list[Item], frac: dict[str, float], seed: int) -> str:
    """Give every item whose ``split`` is ``None`` a split, in place; returns ``"speaker"`` or ``"file"``.

    Groups (speakers, or single files when there are fewer than :data:`MIN_SPEAKERS` speakers; files without a
    speaker are their own group) are ordered by ``sha256(f"{seed}:{group}")``; the first go to test, the next to
    val, the rest to train, in numbers given by ``frac``. Deterministic; equal input -> equal splits.
    """
    todo = [it for it in items if it.split is None]
    speakers = {it.speaker for it in todo if it.speaker}
    by = "speaker" if len(speakers) >= MIN_SPEAKERS else "file"
    group = {id(it): (f"s:{it.speaker}" if by == "speaker" and it.speaker else f"f:{it.src}") for it in todo}
    order = sorted(set(group.values()), key=lambda g: (hashlib.sha256(f"{seed}:{g}".encode()).hexdigest(), g))
    n_val, n_test = _allocate(len(order), frac)
    split_of = {g: ("test" if i < n_test else "val" if i < n_test + n_val else "train") for i, g in enumerate(order)}
    for it in todo:
        it.split = split_of[group[id(it)]]
    return by
