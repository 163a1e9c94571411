"""Write a scanned user source as a corpus: dedupe, split, copy, manifest, quarantine, ``corpus.json``.

:func:`build_corpus` takes the :class:`~seqflow.data.sources.common.Item` rows and prepare-stage quarantine rows
of a source's scan and

1. drops repeated references to one audio file (reason ``duplicate``, rows after the scan's own rows); every
   dropped item counts against ``data.max_bad_fraction``: more dropped than that fraction of all items (kept +
   dropped) stops prepare before any copying (:func:`check_dropped`), and validate counts them again;
2. gives every item without a split one by speaker (:func:`~seqflow.data.sources.common.assign_splits`);
3. copies the audio byte-for-byte to ``<root>/audio/<split>/<name>`` (original format and extension; down-mixing
   and resampling happen when reading, :func:`seqflow.audio.io.read_audio`); a name taken twice gets ``-<hash8>``;
4. writes ``manifest.jsonl`` (:class:`~seqflow.data.manifest.Utterance` rows sorted by split, kind, path),
   ``quarantine.jsonl`` (prepare rows ``{"audio_filepath", "reason", "detail", "stage": "prepare"[, "line"]}``
   first) and ``corpus.json`` (summary + fingerprint, written last: it marks a complete build).

The fingerprint covers the config, seed, sample rate, every source file's path/size/mtime, every transcript and
quarantine row: unchanged -> the build is skipped ("corpus up to date"); changed -> only new or changed files are
copied and files no longer planned are removed from ``audio/``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import soundfile as sf
from tqdm import tqdm

from seqflow.audio.io import write_bytes_atomic
from seqflow.data.manifest import (MANIFEST_NAME, QUARANTINE_NAME, Utterance, read_jsonl, read_manifest, write_jsonl,
                                   write_manifest)
from seqflow.data.sources.common import (KINDS, SPLITS, Item, assign_splits, config_dict, quarantine_row,
                                         source_paths, speaker_fractions)
from seqflow.errors import ConfigError, DataValidationError

log = logging.getLogger(__name__)

CORPUS_NAME = "corpus.json"  # same name as the synthetic source's summary
FORMAT_VERSION = 1  # bump when what build_corpus writes changes: forces a rebuild


def _dedupe(items: list[Item], quarantine: list[dict]) -> list[Item]:
    seen: dict[Path, Item] = {}
    out = []
    for it in items:
        if it.src in seen:
            first = seen[it.src].extra.get("origin", str(seen[it.src].src))
            quarantine.append(quarantine_row(it.extra.get("origin", it.src), "duplicate",
                                             f"{it.src} is already used by {first}", it.extra.get("line")))
            continue
        seen[it.src] = it
        out.append(it)
    return out


def _destinations(items: list[Item]) -> list[str]:
    """``audio/<split>/<name>`` per item; a name taken by another file gets ``-<hash8>`` before its suffix."""
    taken: set[str] = set()
    out = []
    for it in items:
        rel = f"audio/{it.split}/{it.name}"
        if rel in taken:
            p, tag = Path(rel), hashlib.sha256(str(it.src).encode()).hexdigest()[:8]
            rel = p.with_name(f"{p.stem}-{tag}{p.suffix}").as_posix()
        taken.add(rel)
        out.append(rel)
    return out


def _fingerprint(source: str, spec: dict, sample_rate: int, seed: int, items: list[Item],
                 quarantine: list[dict]) -> str:
    files = []
    for it in items:
        st = it.src.stat()
        files.append([str(it.src), st.st_size, st.st_mtime_ns, it.name, it.text, it.speaker, it.split, it.kind])
    blob = json.dumps({"format": FORMAT_VERSION, "source": source, "spec": spec, "sample_rate": sample_rate,
                       "seed": seed, "files": files, "quarantine": quarantine}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _up_to_date(root: Path, fingerprint: str) -> bool:
    try:
        if json.loads((root / CORPUS_NAME).read_text(encoding="utf-8")).get("fingerprint") != fingerprint:
            return False
        return all(u.resolve(root).is_file() for u in read_manifest(root / MANIFEST_NAME))
    except (OSError, ValueError, TypeError, KeyError):
        return False


def _write_quarantine(root: Path, rows: list[dict]) -> None:
    """Prepare rows first, then any rows of later stages already there (validate rewrites its own)."""
    later = [r for r in read_jsonl(root / QUARANTINE_NAME) if r.get("stage") != "prepare"]
    write_jsonl(root / QUARANTINE_NAME, rows + later)


def _copy(src: Path, dst: Path) -> None:
    """Byte copy via temp + rename, keeping the source mtime; skipped when size and mtime already match."""
    st = src.stat()
    if dst.is_file() and dst.stat().st_size == st.st_size and dst.stat().st_mtime_ns == st.st_mtime_ns:
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _sweep(root: Path, keep: set[str]) -> None:
    """Remove files under ``audio/`` not in ``keep`` (and empty folders), and the synthetic ``background/``."""
    shutil.rmtree(root / "background", ignore_errors=True)
    audio = root / "audio"
    if not audio.is_dir():
        return
    for p in sorted(audio.rglob("*"), reverse=True):
        if p.is_file() or p.is_symlink():
            if p.relative_to(root).as_posix() not in keep:
                p.unlink()
        elif p.is_dir() and not any(p.iterdir()):
            p.rmdir()


def check_dropped(source: str, kept: int, quarantine: list[dict], max_bad_fraction: float | None, root: Path,
                  where: str) -> None:
    """Fail when the items a source dropped (its prepare quarantine rows) exceed ``max_bad_fraction`` of all.

    Args:
        kept: items the source will copy; quarantine: its prepare rows (one per dropped item);
        max_bad_fraction: ``data.max_bad_fraction`` (``None``: no check).

    Raises:
        DataValidationError: ``dropped / (kept + dropped) > max_bad_fraction``; one line with the counts per
            reason and the quarantine file (already written).
    """
    total = kept + len(quarantine)
    if max_bad_fraction is None or not total or len(quarantine) / total <= float(max_bad_fraction):
        return
    reasons = Counter(r["reason"] for r in quarantine)
    raise DataValidationError(
        f"data={source} data.path={where}: {len(quarantine)} of {total} source items dropped at prepare "
        f"({len(quarantine) / total:.1%} > data.max_bad_fraction {float(max_bad_fraction):.1%}); reasons: "
        f"{', '.join(f'{k}: {v}' for k, v in sorted(reasons.items()))}; see {root / QUARANTINE_NAME}")


def _duration(path: Path) -> float:
    try:
        return round(float(sf.info(str(path)).duration), 6)
    except Exception:  # unreadable: copied anyway, validate quarantines it with the reason
        return 0.0


def build_corpus(source: str, spec: dict, items: list[Item], quarantine: list[dict], root: Path, sample_rate: int,
                 seed: int, frac: dict[str, float], where: str, progress: bool = True,
                 summary: dict | None = None, max_bad_fraction: float | None = None) -> Path:
    """Write the corpus for scanned ``items`` under ``root``; returns the ``manifest.jsonl`` path.

    Args:
        source: source name (``corpus.json`` ``source``); spec: its resolved config (part of the fingerprint).
        items / quarantine: the scan's output (quarantine rows from :func:`quarantine_row`, in scan order).
        root: corpus root (``data.root``); sample_rate [Hz] and seed: recorded and fingerprinted.
        frac: ``data.speaker_split`` fractions for items without a split; where: ``data.path`` for messages.
        summary: extra keys for ``corpus.json``.
        max_bad_fraction: ``data.max_bad_fraction`` for :func:`check_dropped` (``None``: no check here).

    Raises:
        ConfigError: a source file lies inside ``<root>/audio`` or ``<root>/background`` (rewritten by prepare).
        DataValidationError: no usable utterance (only backgrounds or nothing), or more items dropped than
            ``max_bad_fraction``; ``quarantine.jsonl`` is written first (and ``corpus.json`` removed, so no
            earlier build passes for this one) so the reasons can be inspected.
    """
    root = Path(root).expanduser().resolve()
    for it in items:
        if any(it.src.is_relative_to((root / sub).resolve()) for sub in ("audio", "background")):
            raise ConfigError(f"source file {it.src} lies inside {root}/audio or {root}/background, which "
                              f"prepare rewrites; move the source or set data.root elsewhere")
    items = _dedupe(items, quarantine)
    if not any(it.kind != "background" for it in items):
        root.mkdir(parents=True, exist_ok=True)
        _write_quarantine(root, quarantine)
        reasons = Counter(r["reason"] for r in quarantine)
        raise DataValidationError(
            f"data={source} data.path={where}: no usable utterance ({len(quarantine)} quarantined"
            + (f": {', '.join(f'{k} {v}' for k, v in sorted(reasons.items()))}; see {root / QUARANTINE_NAME})"
               if quarantine else "; no audio files found)"))
    try:
        check_dropped(source, len(items), quarantine, max_bad_fraction, root, where)
    except DataValidationError:
        root.mkdir(parents=True, exist_ok=True)
        _write_quarantine(root, quarantine)
        (root / CORPUS_NAME).unlink(missing_ok=True)
        raise
    split_by = "given" if all(it.split for it in items) else assign_splits(
        [it for it in items if it.kind != "background"], frac, seed)
    assign_splits(items, frac, seed)  # backgrounds: by file
    if any(it.kind == "positive" for it in items):
        lacking = [s for s in SPLITS if not any(it.kind == "background" and it.split == s for it in items)]
        if lacking:
            log.warning("%s: no background audio in split(s) %s: trigger-word clips there have no noise bed",
                        source, ", ".join(lacking))
    fingerprint = _fingerprint(source, spec, sample_rate, seed, items, quarantine)
    manifest_path = root / MANIFEST_NAME
    if _up_to_date(root, fingerprint):
        _write_quarantine(root, quarantine)
        log.info("corpus up to date: %s (fingerprint %s)", root, fingerprint[:12])
        return manifest_path

    log.info("building %s corpus in %s from %s: %d files, %d quarantined", source, root, where, len(items),
             len(quarantine))
    (root / CORPUS_NAME).unlink(missing_ok=True)  # the summary marks a complete build: written last
    dests = _destinations(items)
    _sweep(root, set(dests))
    rows = []
    for it, rel in tqdm(list(zip(items, dests)), desc=f"prepare: copying {source}", unit="file", disable=not progress):
        _copy(it.src, root / rel)
        rows.append(Utterance(rel, _duration(it.src), it.text, it.speaker, it.split, it.kind,
                              dict(it.extra, source=str(it.src))))
    rows.sort(key=lambda u: (SPLITS.index(u.split), KINDS.index(u.kind), u.audio_filepath))
    write_manifest(manifest_path, rows)
    _write_quarantine(root, quarantine)
    counts = {s: {k: sum(1 for u in rows if u.split == s and u.kind == k) for k in KINDS} for s in SPLITS}
    seconds = {s: round(sum(u.duration for u in rows if u.split == s), 3) for s in SPLITS}
    speakers = {s: len({u.speaker for u in rows if u.split == s and u.speaker}) for s in SPLITS}
    reasons = Counter(r["reason"] for r in quarantine)
    out = {"format": FORMAT_VERSION, "fingerprint": fingerprint, "source": source, "path": where,
           "split_by": split_by, "counts": counts, "seconds": seconds, "speakers": speakers,
           "quarantined": dict(sorted(reasons.items())), "sample_rate": sample_rate, "seed": seed, "config": spec,
           **(summary or {})}
    write_bytes_atomic(root / CORPUS_NAME, (json.dumps(out, indent=2, sort_keys=True, default=str) + "\n").encode())
    log.info("%s corpus: %s (split by %s)", source, {s: sum(counts[s].values()) for s in SPLITS}, split_by)
    return manifest_path


def prepare_from_folders(cfg_data, source: str, scan, sample_rate: int, seed: int, progress: bool = True) -> Path:
    """Shared body of the folder-walking sources: ``scan(base, split, root) -> (items, quarantine
    rows)`` over every folder in ``data.path``, then :func:`build_corpus`; returns the manifest path."""
    raw = config_dict(cfg_data)
    root = Path(str(raw["root"])).expanduser().resolve()
    paths = source_paths(raw, source, want="dir")
    frac = speaker_fractions(raw)
    items, bad = [], []
    for base, split in paths:
        i, b = scan(base, split, root)
        items += i
        bad += b
    spec = {"path": [[str(p), s] for p, s in paths], "speaker_split": frac}
    where = ",".join(str(p) for p, _ in paths)
    return build_corpus(source, spec, items, bad, root, sample_rate, seed, frac, where, progress,
                        max_bad_fraction=raw.get("max_bad_fraction"))
