"""Hard-negative mining for trigger-word models (``clips.hard_negative_mining``, off by default).

Round 1's serving package (its val-calibrated detector) scores the **train** split only: the
continuous streams of the train clips (``shards["index"]["train"]``) and the corpus's train
``negative`` / ``background`` recordings (``manifest.valid.jsonl`` rows with ``split == "train"``).
Val, test and evaluation-set audio is never read here: every source is checked to be train audio
and anything else raises. A detection at the mining threshold that is not a hit on a positive
(outside every positive's ``[start - tol, end + label_seconds + tol]``, the evaluation's hit
region) is a false accept; the ``window_s`` seconds of audio ending at it (the detection time is
when the detector's receptive field ended, so this is what made it fire) become one mined
negative, unless that window holds part of a trigger word. The ``max_windows`` highest-scoring
windows are kept. Round 2's train shards are then synthesized exactly as round 1's (same seeds,
val/test untouched) with the windows added to the negative pool (``mined_fraction`` of inserted
negatives, segments flagged ``mined``), see :class:`seqflow.shards.clips.ClipSource`.

Layout, next to the shard set's splits (one folder per round-1 MLflow run, so the windows are
traceable to the model that found them)::

    <shards root>/<data md5>-<config hash>/mined/<round-1 run id>/
        windows/w000000.flac   mined windows (16-bit FLAC at audio.sample_rate)
        manifest.jsonl         a row per window: audio_filepath (relative), duration [s], split
                               "train", kind "negative", mined, source ("train_clip" | "corpus"),
                               source_key (clip key or corpus audio_filepath), time (detection
                               time within the source [s]), window_start [s], score
        summary.json           metrics, threshold, round-1 run id
        train/                 round 2's train shards + index.json

The folder (windows, manifest, summary) is written under a temporary name and renamed in one
step; a complete folder is reused (a retried task does not mine twice).

>>> mined = mine_round(cfg, Path("pkg"), shards, round1_run_id)     # doctest: +SKIP
>>> mined["shards"]["index"]["train"], mined["metrics"]["mining/fa_per_hour"]  # doctest: +SKIP
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from seqflow.errors import ConfigError, SeqflowError

log = logging.getLogger("seqflow.mining")

MINED_DIR = "mined"
MANIFEST_NAME = "manifest.jsonl"
SUMMARY_NAME = "summary.json"
CORPUS_KINDS = ("negative", "background")
GROUP_SECONDS = 1800.0      # audio scored per batch of streams (bounds memory on hours of audio)
NUM_STREAMS = 16            # streams per batch (GRU steps are sequential; batching is the speed)
MIN_WINDOW_FRACTION = 0.5   # a window cut short by its source's start keeps at least this share of window_s


@dataclass(frozen=True)
class MiningConfig:
    """``clips.hard_negative_mining``: ``threshold`` None = round 1's val-calibrated threshold;
    ``window_s`` [s]; ``max_windows`` kept (highest scores); ``mined_fraction`` of inserted negatives."""

    enabled: bool = False
    threshold: float | None = 0.5
    window_s: float = 1.5
    max_windows: int = 2000
    mined_fraction: float = 0.3

    @classmethod
    def from_config(cls, cfg) -> "MiningConfig":
        """Read ``cfg.clips.hard_negative_mining`` (absent: disabled).

        Raises:
            ConfigError: threshold outside ``(0, 1]``, ``window_s <= 0``, ``max_windows < 0`` or
                ``mined_fraction`` outside ``[0, 1]``.
        """
        node = (cfg.get("clips") or {}).get("hard_negative_mining") or {}
        t = node.get("threshold", 0.5)
        mc = cls(enabled=bool(node.get("enabled", False)), threshold=None if t is None else float(t),
                 window_s=float(node.get("window_s", 1.5)), max_windows=int(node.get("max_windows", 2000)),
                 mined_fraction=float(node.get("mined_fraction", 0.3)))
        if (mc.threshold is not None and not 0.0 < mc.threshold <= 1.0) or mc.window_s <= 0 \
                or mc.max_windows < 0 or not 0.0 <= mc.mined_fraction <= 1.0:
            raise ConfigError(f"clips.hard_negative_mining: need 0 < threshold <= 1 (or null), window_s > 0, "
                              f"max_windows >= 0, 0 <= mined_fraction <= 1 (got {mc})")
        return mc


def mining_enabled(cfg) -> bool:
    """True when ``clips.hard_negative_mining.enabled`` and the model family's kind is trigger_word."""
    from seqflow.families import get_family

    return MiningConfig.from_config(cfg).enabled and get_family(cfg).kind == "trigger_word"


def only_train(split: str | None, what: str) -> None:
    """The guard every mined source passes: evaluation audio must never become training data.

    Raises:
        SeqflowError: ``split`` is not ``"train"`` (names ``what``).
    """
    if split != "train":
        raise SeqflowError(f"hard-negative mining: {what} is split {split!r}; only train audio may be mined")


@dataclass
class Source:
    """One piece of train audio: ``wav (S,)`` float32, ``info`` (``source``, ``source_key``, ...),
    ``positives``: ``[(start, end)]`` [s] of trigger words inside it."""

    wav: np.ndarray
    info: dict
    positives: list[tuple[float, float]] = field(default_factory=list)


def train_clip_sources(train_index: str | Path) -> Iterator[Source]:
    """The train clips of a shard split (its ``index.json`` must say split ``train``).

    Raises:
        SeqflowError: the index is of another split.
    """
    from seqflow.shards.reader import iter_samples

    only_train(json.loads(Path(train_index).read_text()).get("split"), f"shard index {train_index}")
    for key, wav, meta in iter_samples(train_index):
        pos = [(float(s["start"]), float(s["end"])) for s in meta.get("segments", ()) if s.get("kind") == "positive"]
        yield Source(wav, {"source": "train_clip", "source_key": key}, pos)


def corpus_sources(data_root: str | Path, sample_rate: int) -> Iterator[Source]:
    """The corpus's train ``negative`` and ``background`` recordings (``manifest.valid.jsonl``),
    at ``sample_rate``; undecodable files are skipped with a warning (validate quarantines them)."""
    from seqflow.audio.io import read_audio
    from seqflow.data.manifest import read_manifest
    from seqflow.errors import AudioDecodeError
    from seqflow.shards.clips import VALID_MANIFEST_NAME

    root = Path(data_root)
    for u in read_manifest(root / VALID_MANIFEST_NAME):
        if u.split != "train" or u.kind not in CORPUS_KINDS:
            continue
        only_train(u.split, u.audio_filepath)
        try:
            wav, _ = read_audio(u.resolve(root), target_sr=sample_rate)
        except AudioDecodeError as exc:
            log.warning("mining: skipped %s", exc)
            continue
        yield Source(wav, {"source": "corpus", "source_key": u.audio_filepath, "kind": u.kind})


@dataclass
class MiningResult:
    """Mined windows (``(wav (S,), manifest row)`` in scan order) and what was scored."""

    windows: list[tuple[np.ndarray, dict]]
    num_false_accepts: int
    seconds: float           # audio scored [s]
    negative_seconds: float  # of which outside every positive's hit region [s]
    num_skipped: int         # false accepts whose window held a trigger word or was too short
    threshold: float

    def metrics(self) -> dict[str, float]:
        """``mining/*`` metrics: num_windows, num_false_accepts, hours_scored, fa_per_hour (per
        hour of negative audio), threshold."""
        neg_h = self.negative_seconds / 3600.0
        return {"mining/num_windows": float(len(self.windows)),
                "mining/num_false_accepts": float(self.num_false_accepts),
                "mining/num_skipped": float(self.num_skipped), "mining/hours_scored": self.seconds / 3600.0,
                "mining/fa_per_hour": float(self.num_false_accepts / neg_h) if neg_h > 0 else 0.0,
                "mining/threshold": float(self.threshold)}


def _union_length(regions: list[tuple[float, float]], lo: float, hi: float) -> float:
    covered, last = 0.0, lo
    for a, b in sorted(regions):
        a, b = max(a, last), min(b, hi)
        if b > a:
            covered += b - a
        last = max(last, b)
    return covered


def _groups(sources: Iterable[Source], sample_rate: int, group_seconds: float) -> Iterator[list[Source]]:
    group, seconds = [], 0.0
    for src in sources:
        group.append(src)
        seconds += len(src.wav) / sample_rate
        if seconds >= group_seconds:
            yield group
            group, seconds = [], 0.0
    if group:
        yield group


def mine_windows(detector, sources: Iterable[Source], threshold: float, window_s: float, max_windows: int,
                 label_seconds: float, tolerance_s: float, refractory_s: float,
                 group_seconds: float = GROUP_SECONDS, num_streams: int = NUM_STREAMS) -> MiningResult:
    """Score ``sources`` with ``detector`` and cut a window before every false accept.

    Sources are joined into ``num_streams`` continuous streams per ``group_seconds`` of audio
    (source ``i`` → stream ``i % num_streams``) and scored in one batch (``scores_many``);
    detections by :func:`seqflow.serve.detector.detect` at ``threshold`` with ``refractory_s``.

    Args:
        detector: any trigger-word detector (``scores_many``, ``sample_rate``, ``step_s``,
            ``first_step_end_s``).
        window_s: seconds before the detection; a window is cut at its source's start and dropped
            (counted in ``num_skipped``) if shorter than ``MIN_WINDOW_FRACTION * window_s`` or if
            it overlaps a trigger word.
        max_windows: keep the highest-scoring ones (ties: the earlier).
        label_seconds / tolerance_s: a detection in ``[start - tol, end + label_seconds + tol]``
            of a positive is a hit, not a false accept.

    Returns:
        :class:`MiningResult`; window rows hold ``source``, ``source_key`` (+ ``kind``), ``split``,
        ``time``, ``window_start`` (seconds within the source), ``duration`` [s], ``score``.
    """
    from seqflow.serve.detector import detect

    sr = int(detector.sample_rate)
    heap: list = []
    order = itertools.count()
    fa = skipped = 0
    seconds = negative = 0.0
    for group in _groups(sources, sr, group_seconds):
        streams = [group[i::num_streams] for i in range(min(num_streams, len(group)))]
        joined = []
        for members in streams:
            starts = np.cumsum([0] + [len(m.wav) for m in members]) / sr
            pos = [(t0 + a, t0 + b) for t0, m in zip(starts, members) for a, b in m.positives]
            joined.append((np.concatenate([np.asarray(m.wav, np.float32).reshape(-1) for m in members]), starts, pos))
        probs = detector.scores_many([w for w, _, _ in joined])
        for (wav, starts, pos), p, members in zip(joined, probs, streams):
            total = len(wav) / sr
            regions = [(a - tolerance_s, b + label_seconds + tolerance_s) for a, b in pos]
            seconds += total
            negative += total - _union_length(regions, 0.0, total)
            for det in detect(p, detector.step_s, threshold, refractory_s, detector.first_step_end_s):
                t = min(float(det["start"]), total)
                if any(lo <= t <= hi for lo, hi in regions):
                    continue  # a hit on a trigger word
                fa += 1
                j = max(0, min(int(np.searchsorted(starts, t, side="right")) - 1, len(members) - 1))
                a = max(float(starts[j]), t - window_s)
                if t - a < MIN_WINDOW_FRACTION * window_s or any(pa < t and a < pb for pa, pb in pos):
                    skipped += 1
                    continue
                w = wav[int(round(a * sr)):int(round(t * sr))].copy()
                row = {**members[j].info, "split": "train", "time": round(t - float(starts[j]), 4),
                       "window_start": round(a - float(starts[j]), 4), "duration": len(w) / sr,
                       "score": round(float(det["score"]), 6)}
                item = (float(det["score"]), -next(order), (w, row))
                if len(heap) < max_windows:
                    heapq.heappush(heap, item)
                elif max_windows and item[:2] > heap[0][:2]:
                    heapq.heapreplace(heap, item)
    kept = [x[2] for x in sorted(heap, key=lambda x: -x[1])]
    return MiningResult(kept, fa, seconds, negative, skipped, float(threshold))


def write_mined(out_dir: Path, result: MiningResult, sample_rate: int, summary: dict) -> Path:
    """Write ``windows/*.flac``, ``manifest.jsonl`` and ``summary.json`` (``summary`` plus
    ``result.metrics()``) into ``out_dir`` atomically (temporary sibling folder + rename); an
    incomplete older ``out_dir`` is replaced. Returns ``out_dir``."""
    from seqflow.audio.io import write_audio_atomic
    from seqflow.data.manifest import write_jsonl

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        rows = []
        for i, (wav, row) in enumerate(result.windows):
            rel = f"windows/w{i:06d}.flac"
            write_audio_atomic(tmp / rel, wav, sample_rate)
            rows.append({"audio_filepath": rel, **row, "kind": "negative", "mined": True})
        write_jsonl(tmp / MANIFEST_NAME, rows)
        (tmp / SUMMARY_NAME).write_text(json.dumps({**summary, "metrics": result.metrics()}, indent=2, sort_keys=True))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def reshard_train(cfg, data_root: str | Path, mined_dir: Path, data_md5: str, config_hash: str) -> dict:
    """Round 2's train shards in ``mined_dir/train``: the same clips as round 1's train split (same
    seeds and config) but with the mined windows in the negative pool. Returns the index dict.

    Raises:
        ShardError: as :func:`seqflow.shards.writer.write_shards`; a mined row not of split train.
    """
    from seqflow.shards.clips import ClipSource
    from seqflow.shards.writer import effective_min_shards, write_shards

    source = ClipSource.from_config(cfg, data_root)
    source.mined_manifest = Path(mined_dir) / MANIFEST_NAME
    source.mined_fraction = MiningConfig.from_config(cfg).mined_fraction
    return write_shards(source.clips("train"), Path(mined_dir) / "train", "train", int(cfg.shards.target_bytes),
                        effective_min_shards(cfg), fmt=str(cfg.shards.format), data_md5=data_md5,
                        config_hash=config_hash, progress=False, total=source.num_clips("train"))


def load_package_detector(package_dir: Path):
    """The detector of a trigger-word package (built-in log-mel or speech-embedding family).

    Raises:
        SeqflowError / ConfigError: not a trigger-word package (see the loaders).
    """
    from seqflow.serve.detector import CONFIG_NAME, load_detector
    from seqflow.serve.embedding_detector import MODEL, load_embedding_detector

    path = Path(package_dir) / CONFIG_NAME
    meta = json.loads(path.read_text()) if path.is_file() else {}
    return load_embedding_detector(package_dir) if meta.get("model") == MODEL else load_detector(package_dir)


def mine_round(cfg, package_dir: Path, shards: dict, round1_run_id: str) -> dict:
    """Mine with round 1's package, then write round 2's train shards (both reused when complete).

    Returns ``{"shards": shards with index.train → round 2's train index, "metrics": mining/*,
    "tags": mining.*, "num_windows", "dir"}``.

    Raises:
        SeqflowError: a non-train source (never expected: the guard), ShardError: see
            :func:`reshard_train`.
    """
    from seqflow.families.trigger_word import matching
    from seqflow.shards.index import INDEX_NAME, verify_index

    mc = MiningConfig.from_config(cfg)
    train_index = json.loads(Path(shards["index"]["train"]).read_text())
    out = Path(shards["root"]) / MINED_DIR / round1_run_id
    summary_path = out / SUMMARY_NAME
    if not summary_path.is_file():
        detector = load_package_detector(package_dir)
        threshold = float(detector.threshold if mc.threshold is None else mc.threshold)
        match = matching(cfg)
        sources = itertools.chain(train_clip_sources(shards["index"]["train"]),
                                  corpus_sources(cfg.data.root, int(detector.sample_rate)))
        result = mine_windows(detector, sources, threshold, mc.window_s, mc.max_windows, match.window_s,
                              match.tolerance_s, match.refractory_s)
        write_mined(out, result, int(detector.sample_rate),
                    {"round1_run_id": round1_run_id, "threshold": threshold,
                     "threshold_source": "val" if mc.threshold is None else "config", "window_s": mc.window_s,
                     "max_windows": mc.max_windows, "train_index": str(shards["index"]["train"])})
        log.info("mining: %d false accepts in %.2f h of train audio (%.3g FA/h at threshold %.3f); kept %d windows "
                 "(%d skipped) at %s", result.num_false_accepts, result.seconds / 3600,
                 result.metrics()["mining/fa_per_hour"], threshold, len(result.windows), result.num_skipped, out)
    summary = json.loads(summary_path.read_text())
    metrics = summary["metrics"]
    index_path = out / "train" / INDEX_NAME
    num = int(metrics["mining/num_windows"])
    if num and (not index_path.is_file() or verify_index(index_path)):
        reshard_train(cfg, cfg.data.root, out, train_index.get("data_md5", ""), train_index.get("config_hash", ""))
    new_shards = {**shards, "index": {**shards["index"], "train": str(index_path) if num else shards["index"]["train"]}}
    if num:
        new_shards["num_samples"] = {**shards.get("num_samples", {}),
                                     "train": int(json.loads(index_path.read_text())["num_samples"])}
    tags = {"mining.windows_dir": str(out), "mining.round1_run_id": round1_run_id,
            "mining.threshold_source": summary["threshold_source"],
            "mining.train_shards": str(index_path.parent) if num else "unchanged (no windows)"}
    return {"shards": new_shards, "metrics": metrics, "tags": tags, "num_windows": num, "dir": str(out)}
