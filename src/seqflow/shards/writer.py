"""WebDataset shard writer: tars sized by bytes, ``index.json`` with sha256, atomic split folders.

Layout: ``<shards.root>/<data_md5>-<config_hash>/<split>/shard-000000.tar`` + ``index.json``.
A split folder is written under a temporary name next to its final place and renamed in one
step, so a reader sees either no split or a complete one; an existing complete set for the same
data version and config hash is reused. ``index.json`` is described in :mod:`seqflow.shards.index`.
Temporary folders are named ``.<split>.tmp-<host>-<pid>-<random>`` (``.old-`` for a replaced split on its
way out): a writer killed mid-write (SIGKILL, power loss) leaves one behind, and the next
:func:`shard_dataset` removes every such folder whose writer no longer runs, with a warning
(:func:`clean_stale_temp`); being hidden and without a final name, none is ever read as a split.
What a sample holds depends on the model family: trigger-word clips (:mod:`seqflow.shards.clips`)
or utterances for ASR (:mod:`seqflow.shards.utterances`, with the tokenizer and the shard-stage
quarantine next to the splits).

>>> s = shard_dataset(cfg, Path(cfg.data.root), data_md5)           # doctest: +SKIP
>>> s.index_paths["train"], s.num_samples["train"]                  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import webdataset as wds
from omegaconf import OmegaConf
from tqdm import tqdm

from seqflow.audio.io import encode_audio
from seqflow.data.manifest import QUARANTINE_NAME
from seqflow.errors import ShardError
from seqflow.shards.clips import SPLITS, ClipSource, augment_fingerprint
from seqflow.shards.real_speech import real_speech_fingerprint
from seqflow.shards.index import INDEX_NAME, finish_index, verify_index
from seqflow.shards.utterances import UtteranceSource, utterance_shard_config

log = logging.getLogger(__name__)

SHARD_PATTERN = "shard-{:06d}.tar"
SHARD_LAYOUT_VERSION = 4  # bump when clip synthesis or the sample layout changes (4: words trimmed once)
# .<name>.tmp-<host>-<pid>-<random> (older versions: .<name>.tmp-<random>, no writer recorded)
TEMP_NAME = re.compile(r"^\.(?P<name>.+?)\.(?:tmp|old)-(?:(?P<host>.+)-(?P<pid>\d+)-)?[a-z0-9_]+$")


def _temp_prefix(name: str, kind: str) -> str:
    """``mkdtemp`` prefix naming the writer: ``.<name>.<kind>-<host>-<pid>-``."""
    return f".{name}.{kind}-{socket.gethostname()}-{os.getpid()}-"


def _writer_runs(host: str | None, pid: str | None) -> bool:
    """Whether the writer named by a temp folder may still run: yes for another host (unknowable) and for a
    live process here; no for a dead or zombie pid, or a folder of an older version (no writer recorded)."""
    if host is None or pid is None:
        return False
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child its parent has not reaped yet still answers kill(0)
        return Path(f"/proc/{int(pid)}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def clean_stale_temp(folder: Path, name: str | None = None) -> list[Path]:
    """Remove the temporary folders in ``folder`` (of split ``name`` only, when given) left by shard writes
    that were killed before they finished; one warning per folder. Folders of a writer that still runs are kept.

    Returns:
        The removed folders.
    """
    removed = []
    if not Path(folder).is_dir():
        return removed
    for p in sorted(Path(folder).iterdir()):
        m = TEMP_NAME.match(p.name)
        if not (m and p.is_dir() and not p.is_symlink()) or (name is not None and m["name"] != name):
            continue
        if _writer_runs(m["host"], m["pid"]):
            continue
        shutil.rmtree(p, ignore_errors=True)
        log.warning("removed %s: temporary folder of a shard write that did not finish (writer %s no longer "
                    "runs); never used as shards", p, f"pid {m['pid']}" if m["pid"] else "of an older seqflow")
        removed.append(p)
    return removed


def sweep_shard_temp(shards_root: Path) -> list[Path]:
    """:func:`clean_stale_temp` in every shard set under ``shards_root`` (``<set>/`` and ``<set>/mined/<run>/``,
    where :func:`write_shards` writes); returns the removed folders."""
    root = Path(shards_root)
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for shard_set in sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")):
        removed += clean_stale_temp(shard_set)
        mined = shard_set / "mined"
        if mined.is_dir():
            for run in sorted(d for d in mined.iterdir() if d.is_dir() and not d.name.startswith(".")):
                removed += clean_stale_temp(run)
    return removed


def _tar_size(sample: dict) -> int:
    """Bytes a sample adds to a tar: a 512-byte header per member plus data padded to 512."""
    return sum(512 + -(-len(v) // 512) * 512 for k, v in sample.items() if not k.startswith("_"))


def _encode(sample: dict, fmt: str) -> tuple[dict, float]:
    key = str(sample["__key__"])
    if "." in key or "/" in key or not key:
        raise ShardError(f"sample key {key!r}: must be non-empty without '.' or '/'")
    sr = int(sample["sample_rate"])
    seconds = len(sample["audio"]) / sr
    meta = dict(sample.get("json") or {})
    out = {"__key__": key, fmt: encode_audio(sample["audio"], sr, fmt),
           "txt": str(sample.get("txt", "")).encode("utf-8"),
           "json": json.dumps(meta, sort_keys=True, ensure_ascii=False).encode("utf-8")}
    return out, seconds


class _Shards:
    """Writes encoded samples into consecutive tars, recording counts and seconds per tar."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.stats, self.seconds, self._writer, self._stream = folder, [], [], None, None

    def open_next(self) -> None:
        self.close()
        name = SHARD_PATTERN.format(len(self.stats))
        self._stream = open(self.folder / name, "wb")
        self._writer = wds.TarWriter(self._stream, encoder=False, mtime=0.0, user="seqflow", group="seqflow")
        self.stats.append({"name": name, "num_samples": 0, "num_seconds": 0.0, "est_bytes": 0})

    def write(self, sample: dict, seconds: float) -> None:
        self._writer.write(sample)
        st = self.stats[-1]
        st["num_samples"] += 1
        st["num_seconds"] += seconds
        self.seconds.append(seconds)
        st["est_bytes"] += _tar_size(sample)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._stream.close()
            self._writer = self._stream = None


def _resplit(folder: Path, stats: list[dict], seconds: list[float], num_shards: int) -> list[dict]:
    """Rewrite the tars in ``folder`` into ``num_shards`` tars of near-equal sample counts
    (``seconds``: duration of every sample in write order)."""
    total = len(seconds)
    counts = [total // num_shards + (1 if i < total % num_shards else 0) for i in range(num_shards)]
    old = folder / "_old"
    old.mkdir()
    for s in stats:
        os.replace(folder / s["name"], old / s["name"])
    urls = [{"url": str(old / s["name"])} for s in stats]
    out = _Shards(folder)
    source = iter(wds.tarfile_samples(iter(urls)))
    durations = iter(seconds)
    for count in counts:
        out.open_next()
        for _ in range(count):
            sample = next(source)
            out.write({k: v for k, v in sample.items() if not k.startswith("__") or k == "__key__"},
                      next(durations))
    out.close()
    shutil.rmtree(old)
    return out.stats


def write_shards(samples: Iterable[dict], out_dir: Path, split: str, target_bytes: int, min_shards: int,
                 fmt: str = "flac", data_md5: str = "", config_hash: str = "", progress: bool = True,
                 total: int | None = None) -> dict:
    """Write ``samples`` as WebDataset tars ``out_dir/shard-%06d.tar`` plus ``out_dir/index.json``.

    Args:
        samples: dicts ``{"__key__", "audio": float32 (S,), "sample_rate", "txt", "json": dict}``
            (as :meth:`ClipSource.clips` yields); audio is encoded as 16-bit ``fmt`` (flac | wav).
        out_dir: the split folder; replaced as a whole (temporary sibling folder + rename); temporary
            folders of earlier killed writes of the same split are removed first (:func:`clean_stale_temp`).
        target_bytes: a new tar starts before one would grow past this size.
        min_shards: at least this many tars (samples re-spread evenly when fewer would do).
        total: number of samples, for the progress bar only.

    Returns:
        The index dict (also written as ``index.json``): split, num_samples, num_seconds, format,
        shards [{name, num_samples, num_seconds, sha256, bytes}], data_md5, config_hash.

    Raises:
        ShardError: no samples, fewer samples than ``min_shards``, or a bad sample key.
    """
    if fmt not in ("flac", "wav"):
        raise ShardError(f"shards.format: {fmt!r} is not flac or wav")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temp(out_dir.parent, out_dir.name)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=_temp_prefix(out_dir.name, "tmp")))
    try:
        shards = _Shards(tmp)
        for sample in tqdm(samples, total=total, disable=not progress, desc=f"shard {split}", unit="sample"):
            enc, seconds = _encode(sample, fmt)
            size = _tar_size(enc)
            if not shards.stats or (shards.stats[-1]["num_samples"] and shards.stats[-1]["est_bytes"] + size > target_bytes):
                shards.open_next()
            shards.write(enc, seconds)
        shards.close()
        stats, n = shards.stats, sum(s["num_samples"] for s in shards.stats)
        if n == 0:
            raise ShardError(f"{out_dir}: split {split!r} has no samples to shard")
        if len(stats) < min_shards:
            if n < min_shards:
                raise ShardError(f"{out_dir}: split {split!r} has {n} samples, fewer than shards.min_shards="
                                 f"{min_shards} (every rank x dataloader worker needs a shard); add data or "
                                 f"lower min_shards / ray.num_workers / trainer.num_workers")
            stats = _resplit(tmp, stats, shards.seconds, min_shards)
        index = finish_index(tmp, stats, split, fmt, data_md5, config_hash, seconds=shards.seconds)
        _swap_in(tmp, out_dir)
        return index
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _swap_in(tmp: Path, out_dir: Path) -> None:
    """Rename ``tmp`` to ``out_dir``; an older ``out_dir`` is moved aside first and then deleted."""
    trash = None
    if out_dir.exists():
        trash = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=_temp_prefix(out_dir.name, "old")))
        os.replace(out_dir, trash / out_dir.name)
    os.replace(tmp, out_dir)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


def effective_min_shards(cfg) -> int:
    """``shards.min_shards``, raised to ``ray.num_workers x trainer.num_workers`` so every rank and
    dataloader worker gets at least one shard."""
    need = int(cfg.shards.min_shards)
    if "ray" in cfg and "trainer" in cfg:
        need = max(need, int(cfg.ray.num_workers) * max(1, int(cfg.trainer.num_workers)))
    return need


def clips_fingerprint(clips) -> dict:
    """``clips.*`` as it shapes the shard set, without ``hard_negative_mining``: mining never
    changes the shard set (round 2's train shards live apart, under ``mined/<run id>/``), so turning
    it on or off keeps the same config hash and reuses the same shards. Nor ``real_speech``: it joins
    the hash as its files only when used (:func:`~seqflow.shards.real_speech.real_speech_fingerprint`)."""
    out = OmegaConf.to_container(clips, resolve=True) if OmegaConf.is_config(clips) else dict(clips)
    out.pop("hard_negative_mining", None)
    out.pop("real_speech", None)
    return out


def shard_config_hash(cfg) -> str:
    """Stable 12-hex hash of everything that changes shard content.

    Trigger word: sample rate, shard format / size / count, ``clips.*`` (without
    ``clips.hard_negative_mining``, :func:`clips_fingerprint`), seed, layout version, and
    when ``augment.enabled`` the augmentation (:func:`~seqflow.shards.clips.augment_fingerprint`:
    the section without ``cache_dir``, the files of ``noise_dirs`` with their sizes; with
    augmentation off the hash is what it was before augmentation existed), and the real speech
    files of ``clips.real_speech`` when any exist (absent folders: the hash of before);
    nothing of ``model.*``: clips store segment times, labels are derived at load from the net's
    own step geometry, so a different hop or conv stride reuses the same shards. ASR
    (``model.name`` ctc | transformer, which share shards): family ``asr``, sample rate, format / size / count, hop, tokenizer kind and size, data
    source name, seed, utterance layout version (:func:`~seqflow.shards.utterances.utterance_shard_config`).
    The two families never share a shard set.
    """
    from seqflow.families import get_family

    if get_family(cfg).shards == "utterances":
        relevant = utterance_shard_config(cfg)
    else:
        relevant = {
            "layout": SHARD_LAYOUT_VERSION,
            "sample_rate": int(cfg.audio.sample_rate),
            "format": str(cfg.shards.format), "target_bytes": int(cfg.shards.target_bytes),
            "min_shards": effective_min_shards(cfg),
            "clips": clips_fingerprint(cfg.clips),
            "seed": int(cfg.seed),
        }
        real_speech = real_speech_fingerprint(cfg.clips)
        if real_speech is not None:  # unused (folders absent): the hash of shards made before it existed
            relevant["real_speech"] = real_speech
        augment = augment_fingerprint(OmegaConf.to_container(cfg.augment, resolve=True) if "augment" in cfg else None)
        if augment is not None:
            relevant["augment"] = augment
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class ShardSet:
    """A complete shard set: ``root`` (folder/URI), ``index_paths`` and ``num_samples`` per split;
    ``tokenizer_dir``: the ASR tokenizer trained on its train transcripts (``None`` for trigger word)."""

    root: str
    index_paths: dict[str, Path] = field(default_factory=dict)
    num_samples: dict[str, int] = field(default_factory=dict)
    data_md5: str = ""
    config_hash: str = ""
    tokenizer_dir: Path | None = None


def shard_dataset(cfg, data_root: str | Path, data_md5: str, progress: bool = True, verify: bool = True) -> ShardSet:
    """Write (or reuse) the shards of train/val/test under ``<shards.root>/<data_md5>-<config_hash>/<split>/``.

    The model family's ``shards`` picks the content: ``clips`` → synthesized clips (:class:`ClipSource`);
    ``utterances`` (ctc, transformer) → :class:`UtteranceSource`, plus ``tokenizer/`` and the
    shard-stage ``quarantine.jsonl`` in the shard set folder. Temporary folders left under
    ``shards.root`` by killed writes are removed first (:func:`sweep_shard_temp`, one warning each). A split
    whose ``index.json`` exists
    (and, with ``verify``, whose tars match their sha256) is reused; anything else is (re)written
    from the corpus at ``data_root``.

    Raises:
        ConfigError: ``model.family`` cannot be imported.
        ShardError: corpus manifest missing, or a split lacks positives/backgrounds (trigger word)
            or valid utterances (ASR), or too few samples for ``min_shards``.
    """
    from seqflow.families import get_family

    family = "asr" if get_family(cfg).shards == "utterances" else "trigger_word"
    config_hash = shard_config_hash(cfg)
    root = Path(cfg.shards.root) / f"{data_md5}-{config_hash}"
    sweep_shard_temp(Path(cfg.shards.root))
    shard_set = ShardSet(root=str(root), data_md5=data_md5, config_hash=config_hash)
    utterances = UtteranceSource.from_config(cfg, data_root, root) if family == "asr" else None
    source, reused = None, []
    try:
        for split in SPLITS:
            index_path = root / split / INDEX_NAME
            problems = verify_index(index_path, check_sha256=verify) if index_path.exists() else ["missing"]
            if not problems:
                index = json.loads(index_path.read_text())
                reused.append(split)
            else:
                if index_path.exists():
                    log.warning("rewriting shards of split %s: %s", split, "; ".join(problems[:3]))
                if utterances is not None:
                    samples, total = utterances.samples(split), utterances.count(split)
                else:
                    source = source or ClipSource.from_config(cfg, data_root)
                    samples, total = source.clips(split), source.num_clips(split)
                index = write_shards(samples, root / split, split, int(cfg.shards.target_bytes),
                                     effective_min_shards(cfg), fmt=str(cfg.shards.format), data_md5=data_md5,
                                     config_hash=config_hash, progress=progress, total=total)
                log.info("wrote %d %s shards (%d samples, %.0f s) at %s", len(index["shards"]), split,
                         index["num_samples"], index["num_seconds"], root / split)
            shard_set.index_paths[split] = index_path
            shard_set.num_samples[split] = int(index["num_samples"])
        if utterances is not None:
            utterances.tokenizer()  # loaded, or rebuilt when only the tokenizer went missing
            shard_set.tokenizer_dir = utterances.tokenizer_dir
    finally:
        if utterances is not None and utterances.prepared:
            utterances.write_quarantine(root / QUARANTINE_NAME, keep_splits=tuple(reused))
    if len(reused) == len(SPLITS):
        log.info("reusing shards at %s", root)
    return shard_set


_finish_index = finish_index  # older name, kept for callers that build tars by hand
