"""The ``speech_commands`` data source: one folder per word (Google Speech Commands layout)::

    <path>/<word>/<speaker>_nohash_<n>.wav        one spoken word per clip (speaker = prefix before _nohash_)
    <path>/_background_noise_/<name>.wav           optional long noise recordings
    <path>/validation_list.txt, testing_list.txt   optional official split lists (lines ``<word>/<file>``)

ASR models (``data.trigger_word`` null): every clip is an ``utterance`` with ``text=<word>``; backgrounds are not
used. Trigger-word model (``data.trigger_word=marvin``): the trigger word's folder -> ``positive`` (text = the
trigger word), every other word -> ``negative`` (text = that word), ``_background_noise_`` -> ``background``
(text ``""``, speaker ``"user"``). ``data.words`` (default: all) limits the words used; the trigger word is
always kept. Other folders starting with ``_`` are skipped.

Quarantined at prepare: ``unsupported_format`` (a file in a word folder, or in ``_background_noise_`` for a
trigger-word model, that the source does not read, e.g. ``.m4a``; ``README``-like files are skipped).

Splits: the official lists when present (files in neither list -> train), else by speaker id
(``data.speaker_split``); background files are split by file.

Raises ``ConfigError`` for a trigger word or ``data.words`` entry with no folder (the message lists the words).

>>> prepare_speech_commands(load_config(["data=speech_commands", "data.path=sc", "data.trigger_word=marvin"]).data,
...                         16000, 1)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from seqflow.data.sources.common import (Item, config_dict, is_audio, source_paths, speaker_fractions,
                                         unsupported_row, walk_audio, walk_files)
from seqflow.data.sources.corpus import build_corpus
from seqflow.errors import ConfigError

log = logging.getLogger(__name__)

SOURCE = "speech_commands"
BACKGROUND_DIR = "_background_noise_"
SPLIT_LISTS = {"val": "validation_list.txt", "test": "testing_list.txt"}


def speaker_of(filename: str) -> str:
    """Speaker id of a clip: the part before ``_nohash_`` (``"0a7c2a8d_nohash_1.wav"`` -> ``"0a7c2a8d"``), else the
    file stem."""
    return filename.split("_nohash_")[0] if "_nohash_" in filename else Path(filename).stem


def word_folders(base: Path, exclude: Path) -> dict[str, Path]:
    """``word -> folder`` for every non-hidden folder under ``base`` not starting with ``_`` that holds audio."""
    out = {}
    for d in sorted(base.iterdir()):
        if (d.is_dir() and not d.name.startswith((".", "_")) and not d.resolve().is_relative_to(exclude)
                and not exclude.is_relative_to(d.resolve()) and walk_audio(d, recursive=False)):
            out[d.name] = d
    return out


def official_splits(base: Path) -> dict[str, str]:
    """``"<word>/<file>" -> "val"|"test"`` from ``validation_list.txt``/``testing_list.txt`` (empty when absent)."""
    out: dict[str, str] = {}
    for split, name in SPLIT_LISTS.items():
        p = base / name
        if p.is_file():
            for line in p.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    out[line.strip().replace("\\", "/")] = split
    return out


def _choose_words(raw: dict, found: dict[str, Path], trigger: str | None, base: Path) -> list[str]:
    available = ", ".join(found) or "none"
    if trigger is not None and trigger not in found:
        raise ConfigError(f"data.trigger_word={trigger!r} has no folder in {base}; words found: {available}")
    wanted = [str(w).strip().lower() for w in (raw.get("words") or [])]
    unknown = [w for w in wanted if w not in found]
    if unknown:
        raise ConfigError(f"data.words {unknown} have no folder in {base}; words found: {available}")
    words = sorted(set(wanted) | ({trigger} if trigger else set())) if wanted else list(found)
    return words


def scan_speech_commands(raw: dict, base: Path, exclude: Path) -> tuple[list[Item], list[dict], dict]:
    """Scan one Speech Commands folder -> ``(items, quarantine rows, summary)``.

    Raises:
        ConfigError: unknown trigger word or ``data.words`` entry.
    """
    trigger = " ".join(str(raw.get("trigger_word") or "").lower().split()) or None
    found = word_folders(base, exclude)
    words = _choose_words(raw, found, trigger, base)
    listed = official_splits(base)
    items, bad = [], []
    for word in words:
        kind = "utterance" if trigger is None else "positive" if word == trigger else "negative"
        files = walk_files(found[word], recursive=False)
        bad += [unsupported_row(p) for p in files if not is_audio(p)]
        for src in (p for p in files if is_audio(p)):
            rel = f"{word}/{src.name}"
            items.append(Item(src.resolve(), rel, word, speaker_of(src.name),
                              listed.get(rel, "train") if listed else None, kind, {"word": word}))
    bg_dir = base / BACKGROUND_DIR
    n_bg = 0
    if trigger is not None and bg_dir.is_dir():
        files = walk_files(bg_dir, exclude=exclude)
        bad += [unsupported_row(p) for p in files if not is_audio(p)]
        for src in (p for p in files if is_audio(p)):
            items.append(Item(src.resolve(), f"{BACKGROUND_DIR}/{src.relative_to(bg_dir).as_posix()}", "", "user",
                              None, "background", {}))
            n_bg += 1
    if trigger is not None and n_bg == 0:
        log.warning("speech_commands: no %s folder with audio in %s: the trigger-word clips need backgrounds",
                    BACKGROUND_DIR, base)
    summary = {"trigger_word": trigger, "words": words, "official_split_lists": bool(listed), "backgrounds": n_bg}
    return items, bad, summary


def prepare_speech_commands(cfg_data: DictConfig, sample_rate: int, seed: int, progress: bool = True) -> Path:
    """Ingest the Speech Commands folder in ``data.path`` into ``data.root``; returns ``manifest.jsonl``'s path.

    Raises:
        ConfigError: ``data.path`` unset / not one folder, unknown trigger word or word, bad ``data.speaker_split``.
        DataValidationError: no word folder with audio, or more files dropped than
            ``data.max_bad_fraction`` (counts per reason, quarantine file).
    """
    raw = config_dict(cfg_data)
    root = Path(str(raw["root"])).expanduser().resolve()
    paths = source_paths(raw, SOURCE, want="dir")
    if len(paths) != 1 or paths[0][1] is not None:
        raise ConfigError("data=speech_commands takes one folder in data.path (splits come from its "
                          "validation_list.txt/testing_list.txt or from speaker ids)")
    base = paths[0][0]
    frac = speaker_fractions(raw)
    items, bad, summary = scan_speech_commands(raw, base, root)
    spec = {"path": str(base), "speaker_split": frac, "trigger_word": summary["trigger_word"],
            "words": summary["words"]}
    return build_corpus(SOURCE, spec, items, bad, root, sample_rate, seed, frac, str(base), progress, summary,
                        max_bad_fraction=raw.get("max_bad_fraction"))
