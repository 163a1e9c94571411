"""Trigger-word training clips, the course method: words overlaid on background noise.

A clip is a random stretch of a background recording; 0..``max_positives`` trigger words and
0..``max_negatives`` other words are inserted at random, non-overlapping positions. Levels:
every word is brought to a reference RMS of ``REF_DBFS`` and then given a random gain from
``positive_gain_db`` (negatives use the same range unless told otherwise, so loudness does not
give the answer away); the background is brought to ``REF_DBFS + background_gain_db`` (so
``background_gain_db`` is the background level relative to speech, about minus the SNR).
The sum is scaled down only if it would clip.

:class:`ClipSource` reads the validated corpus and yields deterministic clips per split as
sample dicts for :func:`seqflow.shards.writer.write_shards`. A clip stores its segment times
only (seconds); per-step labels are derived when training, at the net's own step geometry
(:mod:`seqflow.shards.labels`), so the clips do not depend on the network.

Rooms, channels and levels (``augment.*``, :mod:`seqflow.audio.augment`): when enabled, every
word passes through the split's ``words`` chain before it is placed (a speed change changes its
length, so its segment ends where the changed word ends), and the finished clip through the
``clip`` chain (reverberation, noise, EQ, band limits, telephone, level). Split ``train`` uses
``augment.train`` and the ``train`` RIR bank; ``val`` and ``test`` use ``augment.eval`` and the
disjoint ``eval`` bank. The augmentation draws from its own stream ``(seed, split, i, "augment")``,
so clip ``i`` still depends only on ``(seed, split, i)`` and the config.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from seqflow.audio.augment import Augmenter, stage_config
from seqflow.audio.io import AUDIO_SUFFIXES, read_audio
from seqflow.audio.rooms import RirBank
from seqflow.data.manifest import Utterance, read_jsonl, read_manifest
from seqflow.errors import AudioDecodeError, ShardError
from seqflow.shards.real_speech import RealSpeech, SpeechBank

log = logging.getLogger(__name__)

VALID_MANIFEST_NAME = "manifest.valid.jsonl"
REF_DBFS = -20.0      # reference RMS level of inserted words [dBFS]
PEAK_LIMIT = 0.99     # clips are scaled down to this peak if they would clip
SPLITS = ("train", "val", "test")
AUGMENT_STREAM = zlib.crc32(b"augment")  # extra seed word of the augmentation's random stream

Word = tuple[np.ndarray, dict]  # (waveform (S,), {"text": ..., "speaker": ...})


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def _to_level(x: np.ndarray, dbfs: float) -> np.ndarray:
    r = _rms(x)
    return x if r < 1e-8 else x * np.float32(10.0 ** (dbfs / 20.0) / r)


def trim_silence(wav: np.ndarray, sample_rate: int, top_db: float = 40.0) -> np.ndarray:
    """Cut leading/trailing 10 ms frames quieter than ``top_db`` below the loudest frame
    (TTS renders carry silence; segment ends must be where the word ends)."""
    hop = max(1, sample_rate // 100)
    n = len(wav) // hop
    if n < 3:
        return wav
    frames = np.sqrt(np.mean(np.square(wav[: n * hop].reshape(n, hop), dtype=np.float64), axis=1))
    loud = np.flatnonzero(frames >= frames.max() * 10.0 ** (-top_db / 20.0))
    if loud.size == 0:
        return wav
    return wav[max(0, loud[0] - 1) * hop: min(len(wav), (loud[-1] + 2) * hop)]


def _background_segment(rng: np.random.Generator, background: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    if background.size == 0:
        return np.zeros(n, dtype=np.float32), 0
    if len(background) < n:  # loop a short background
        background = np.tile(background, -(-n // len(background)) + 1)
    start = int(rng.integers(0, len(background) - n + 1))
    return background[start:start + n].astype(np.float32, copy=True), start


def _place(rng: np.random.Generator, length: int, n: int, taken: list[tuple[int, int]], tries: int,
           guard: int = 0) -> int | None:
    """A random start for a word of ``length`` samples whose span ``[s, s + length + guard)``
    overlaps no taken span (``guard``: samples kept free after the word)."""
    if length > n:
        return None
    for _ in range(tries):
        s = int(rng.integers(0, n - length + 1))
        if all(s + length + guard <= a or b <= s for a, b in taken):
            return s
    return None


def synthesize_clip(rng: np.random.Generator, background: np.ndarray, positives: Sequence[Word],
                    negatives: Sequence[Word], duration_s: float, sr: int, max_positives: int,
                    max_negatives: int, positive_gain_db: Sequence[float] = (-6.0, 3.0),
                    background_gain_db: Sequence[float] = (-25.0, -8.0),
                    negative_gain_db: Sequence[float] | None = None, max_tries: int = 50,
                    positive_guard_s: float = 0.0, hard_negatives: Sequence[Word] = (),
                    hard_negative_fraction: float = 0.0, mined_negatives: Sequence[Word] = (),
                    mined_fraction: float = 0.0, real_speech: SpeechBank | None = None,
                    word_augment: Callable[[np.ndarray], np.ndarray] | None = None) -> tuple[np.ndarray, list[dict]]:
    """Overlay random positives and negatives on a random background stretch.

    Args:
        rng: the only source of randomness (equal seeds give equal clips).
        background: ``(S_bg,)`` float32 at ``sr``; looped if shorter than the clip, silence if empty.
        positives / negatives: pools of ``(wav (S_w,), meta)``; ``meta`` has ``text`` and ``speaker``.
        duration_s: clip length [s]; sr: sample rate [Hz].
        max_positives / max_negatives: counts drawn uniformly from ``0..max``; a word that finds no
            free room after ``max_tries`` random positions is skipped.
        positive_gain_db / negative_gain_db / background_gain_db: ``[lo, hi]`` ranges, see module doc.
        positive_guard_s: seconds after each positive kept free of other words (the label window,
            so label-1 steps never cover another word and two positives never share one window).
        hard_negatives / hard_negative_fraction: each negative is drawn from ``hard_negatives``
            (words that sound like the trigger) with this probability, else from ``negatives``.
        mined_negatives / mined_fraction: each negative is first drawn from ``mined_negatives``
            (hard-negative mining's windows, :mod:`seqflow.mining`) with this probability; its
            segment gets ``"mined": True``. With no mined windows no random number is drawn for
            this, so the clips are exactly those of a run without mining.
        real_speech: else, with its ``fraction``, a cut of a real voice (:mod:`seqflow.shards.real_speech`), flagged.
        word_augment: applied to every picked word before it is placed (its own randomness; it
            may change the length, the segment spans the changed word); ``None``: words as rendered.

    Returns:
        ``(clip, segments)``: ``clip`` float32 ``(S,)`` with ``S = round(duration_s * sr)``, peak <= 1;
        ``segments`` sorted by start, each ``{"kind", "start", "end", "text", "speaker", "confusable"}`` (times in seconds;
        ``confusable``: a sound-alike of the trigger word),
        inside ``[0, duration_s]`` and pairwise non-overlapping.
    """
    n = int(round(duration_s * sr))
    negative_gain_db = positive_gain_db if negative_gain_db is None else negative_gain_db
    clip, _ = _background_segment(rng, background, n)
    clip = _to_level(clip, REF_DBFS + float(rng.uniform(*background_gain_db)))
    picks = []
    for kind, pool, most, gains in (("positive", positives, max_positives, positive_gain_db),
                                    ("negative", negatives, max_negatives, negative_gain_db)):
        count = int(rng.integers(0, most + 1)) if pool else 0
        for _ in range(count):
            if kind == "negative" and mined_negatives and rng.random() < mined_fraction:
                src = mined_negatives
            elif kind == "negative" and real_speech and rng.random() < real_speech.fraction:
                src = real_speech.draw(rng, sr)
            else:
                src = hard_negatives if (kind == "negative" and hard_negatives
                                         and rng.random() < hard_negative_fraction) else pool
            picks.append((kind, src[int(rng.integers(0, len(src)))], gains))
    guard = int(round(positive_guard_s * sr))
    taken: list[tuple[int, int]] = []
    segments = []
    for kind, (wav, meta), gains in picks:
        if word_augment is not None:
            wav = word_augment(wav)
        g = guard if kind == "positive" else 0
        start = _place(rng, len(wav), n, taken, max_tries, g)
        gain = float(rng.uniform(*gains))
        if start is None:
            continue
        taken.append((start, start + len(wav) + g))
        clip[start:start + len(wav)] += _to_level(wav, REF_DBFS + gain)
        segments.append({"kind": kind, "start": start / sr, "end": (start + len(wav)) / sr,
                         "text": str(meta.get("text", "")), "speaker": str(meta.get("speaker") or ""),
                         "confusable": bool(meta.get("confusable"))})
        segments[-1].update({flag: True for flag in ("mined", "real_speech") if meta.get(flag)})
    peak = float(np.max(np.abs(clip))) if n else 0.0
    if peak > PEAK_LIMIT:
        clip *= np.float32(PEAK_LIMIT / peak)
    segments.sort(key=lambda s: s["start"])
    return clip.astype(np.float32, copy=False), segments


def train_noise_dirs(augment: Mapping[str, Any]) -> list[str]:
    """``augment.noise_dirs`` (each must exist) plus those of ``augment.optional_noise_dirs`` that
    exist (e.g. the ``make eval-data`` training-noise bank, absent where apt-get is not)."""
    optional = [str(d) for d in augment.get("optional_noise_dirs") or () if Path(str(d)).is_dir()]
    return [str(d) for d in augment.get("noise_dirs") or ()] + optional


def noise_files(dirs: Sequence[str | Path]) -> list[tuple[Path, Path]]:
    """Audio files under each of ``dirs`` (recursively, sorted) as ``(dir, file)``; a missing folder
    is a :class:`ShardError` (a typo must not silently train without noise)."""
    out = []
    for d in dirs or ():
        d = Path(d)
        if not d.is_dir():
            raise ShardError(f"augment.noise_dirs: {d} is not a folder")
        out += [(d, f) for f in sorted(d.rglob("*")) if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES]
    return out


def augment_fingerprint(augment: Mapping[str, Any] | None) -> dict | None:
    """What of ``augment.*`` changes clip content (for the shard config hash): ``None`` when
    disabled; else the section without ``cache_dir``, ``noise_dirs`` replaced by their files
    (name relative to the folder, bytes), plus the pyroomacoustics and librosa versions."""
    if not augment or not augment.get("enabled"):
        return None
    # utterances: the ASR loader's on-the-fly chain, which never touches clips
    out = {k: v for k, v in dict(augment).items()
           if k not in ("cache_dir", "noise_dirs", "optional_noise_dirs", "utterances")}
    out["noise_files"] = [[f.relative_to(d).as_posix(), f.stat().st_size]
                          for d, f in noise_files(train_noise_dirs(augment))]
    out["versions"] = {m: version(m) for m in ("pyroomacoustics", "librosa")}
    return out


@dataclass
class ClipSource:
    """Deterministic trigger-word clips from the validated corpus at ``root``.

    Reads ``root/manifest.valid.jsonl`` (rows of kind positive/negative/background per split);
    each file is decoded once (``read_audio(target_sr=sample_rate)``) and kept in memory.
    Clip ``i`` of a split depends only on ``(seed, split, i)`` (and the config). ``augment``: the
    ``augment`` config section as a plain dict (see the module doc), ``None`` for none.
    """

    root: Path
    sample_rate: int
    duration_s: float
    max_positives: int
    max_negatives: int
    positive_gain_db: tuple[float, float]
    background_gain_db: tuple[float, float]
    label_seconds: float
    seed: int
    clip_counts: dict[str, int]
    hard_negative_fraction: float = 0.0
    manifest_name: str = VALID_MANIFEST_NAME
    augment: Mapping[str, Any] | None = None
    mined_manifest: Path | None = None  # hard-negative mining windows (train only), see :meth:`mined_pool`
    mined_fraction: float = 0.0
    real_speech: RealSpeech = field(default_factory=RealSpeech)  # train-only real voices (clips.real_speech)
    _rows: list[Utterance] | None = field(default=None, init=False, repr=False)
    _audio: dict[str, np.ndarray] = field(default_factory=dict, init=False, repr=False)
    _augmenters: dict[str, tuple[Augmenter, Augmenter]] = field(default_factory=dict, init=False, repr=False)

    @classmethod
    def from_config(cls, cfg, data_root: str | Path) -> "ClipSource":
        """Build from the composed config (``clips.*``, ``augment.*``, ``audio.sample_rate``, ``seed``);
        nothing of ``model.*`` (the clips do not depend on the network or its front end)."""
        from omegaconf import OmegaConf

        c = cfg.clips
        augment = OmegaConf.to_container(cfg.augment, resolve=True) if "augment" in cfg else None
        return cls(root=Path(data_root), sample_rate=int(cfg.audio.sample_rate), duration_s=float(c.duration),
                   max_positives=int(c.max_positives), max_negatives=int(c.max_negatives),
                   positive_gain_db=tuple(float(g) for g in c.positive_gain_db),
                   background_gain_db=tuple(float(g) for g in c.background_gain_db),
                   label_seconds=float(c.label_seconds), hard_negative_fraction=float(c.hard_negative_fraction),
                   seed=int(cfg.seed), clip_counts={s: int(c[f"{s}_clips"]) for s in SPLITS}, augment=augment, real_speech=RealSpeech.from_clips(c))

    def num_clips(self, split: str) -> int:
        """Clips to synthesize for ``split`` (``clips.<split>_clips``)."""
        return int(self.clip_counts[split])

    def _manifest(self) -> list[Utterance]:
        if self._rows is None:
            path = self.root / self.manifest_name
            if not path.is_file():
                raise ShardError(f"{path}: missing (run prepare and validate first)")
            self._rows = read_manifest(path)
        return self._rows

    def _pool(self, split: str, kind: str) -> list[Word]:
        pool, bad = [], []
        for u in self._manifest():
            if u.split != split or u.kind != kind:
                continue
            if u.audio_filepath not in self._audio:
                try:
                    wav, _ = read_audio(u.resolve(self.root), target_sr=self.sample_rate)
                except AudioDecodeError as exc:
                    bad.append(str(exc))
                    continue
                # one owner: renders trimmed at render time say so (``trimmed``); user audio is trimmed here
                done = kind == "background" or u.extra.get("trimmed")
                self._audio[u.audio_filepath] = wav if done else trim_silence(wav, self.sample_rate)
            pool.append((self._audio[u.audio_filepath], {"text": u.text, "speaker": u.speaker or "",
                                                         "path": u.audio_filepath,
                                                         "confusable": bool(u.extra.get("confusable"))}))
        if bad:
            log.warning("clips: skipped %d undecodable %s file(s) of split %s, first: %s", len(bad), kind, split, bad[0])
        return pool

    def mined_pool(self) -> list[Word]:
        """The mined windows of ``mined_manifest`` (JSONL rows ``audio_filepath`` relative to its
        folder, ``split``) as negatives with meta ``mined: True``; empty without a manifest.

        Raises:
            ShardError: a row whose ``split`` is not ``train`` (never train on evaluation audio),
                or a window that cannot be decoded.
        """
        if self.mined_manifest is None:
            return []
        folder, pool = Path(self.mined_manifest).parent, []
        for row in read_jsonl(self.mined_manifest):
            if row.get("split") != "train":
                raise ShardError(f"{self.mined_manifest}: mined window {row.get('audio_filepath')!r} has split "
                                 f"{row.get('split')!r}; only train audio may be mined")
            try:
                wav, _ = read_audio(folder / row["audio_filepath"], target_sr=self.sample_rate)
            except AudioDecodeError as exc:
                raise ShardError(f"{self.mined_manifest}: {exc}") from exc
            pool.append((wav, {"text": "", "speaker": "", "path": row["audio_filepath"], "mined": True}))
        return pool

    def augmenters(self, split: str) -> tuple[Augmenter, Augmenter] | None:
        """``(words, clip)`` augmenters of ``split`` (``augment.train`` for train, ``augment.eval``
        for val/test), built once; ``None`` when augmentation is off or both chains are empty.
        The RIR bank (``train`` or ``eval``) is loaded from ``augment.cache_dir`` or built there;
        noise recordings (``augment.noise_dirs``) are decoded for split ``train`` only.

        Raises:
            ConfigError: an unknown transform or key, or ``speed`` in a ``clip`` chain.
            ShardError: a ``noise_dirs`` entry is not a folder.
        """
        a = self.augment
        if not a or not a.get("enabled"):
            return None
        if split not in self._augmenters:
            chain = "train" if split == "train" else "eval"
            node = a.get(chain) or {}
            stages = {stage: stage_config(node.get(stage), f"augment.{chain}.{stage}", no_speed=stage == "clip")
                      for stage in ("words", "clip")}
            bank = None
            if any(float(st.get("reverb", {}).get("p", 0.0)) > 0 for st in stages.values()):
                bank = RirBank.load_or_build(a["cache_dir"], chain, int(a["rir_bank_size"]), self.seed,
                                             self.sample_rate, a.get("rooms"))
            noises = []
            if chain == "train" and any(float(st.get("noise", {}).get("p", 0.0)) > 0 for st in stages.values()):
                for _, f in noise_files(train_noise_dirs(a)):
                    try:
                        noises.append(read_audio(f, target_sr=self.sample_rate)[0])
                    except AudioDecodeError as exc:
                        log.warning("clips: skipped undecodable noise file: %s", exc)
            self._augmenters[split] = tuple(
                Augmenter(stages[st], self.sample_rate, bank, noises, where=f"augment.{chain}.{st}")
                for st in ("words", "clip"))
        words, clip = self._augmenters[split]
        return (words, clip) if (words or clip) else None

    def clips(self, split: str, num: int | None = None) -> Iterator[dict]:
        """Yield ``num`` (default :meth:`num_clips`) sample dicts for the writer:
        ``{"__key__": "<split>-000000", "audio": float32 (S,), "sample_rate", "txt", "json"}``
        with ``json`` = duration [s], sample_rate [Hz], speaker, segments (times in seconds, see
        :func:`synthesize_clip`), background, and with augmentation ``augment``: the clip-level
        transforms applied with their parameters; no labels (derived at load,
        :mod:`seqflow.shards.labels`). Each positive is followed by ``label_seconds`` free of other words.

        Raises:
            ShardError: the manifest is missing, or the split has no positive or no background.
        """
        num = self.num_clips(split) if num is None else int(num)
        positives, negatives = self._pool(split, "positive"), self._pool(split, "negative")
        backgrounds = self._pool(split, "background")
        for kind, pool in (("positive", positives), ("background", backgrounds)):
            if not pool:
                raise ShardError(f"{self.root / self.manifest_name}: no valid {kind} row for split {split!r}")
        hard = [w for w in negatives if w[1]["confusable"]]
        mined = self.mined_pool() if split == "train" else []  # mined windows: train clips only
        real = self.real_speech.bank(self.sample_rate, trim_silence) if split == "train" else None  # train only
        split_id = zlib.crc32(split.encode())
        augmenters = self.augmenters(split)
        for aug in augmenters or ():
            aug.applied.clear()
            aug.skipped.clear()
        for i in range(num):
            rng = np.random.default_rng([self.seed, split_id, i])
            bg, bg_meta = backgrounds[int(rng.integers(0, len(backgrounds)))]
            words_aug, clip_aug = augmenters or (None, None)
            arng = np.random.default_rng([self.seed, split_id, i, AUGMENT_STREAM]) if augmenters else None
            word_augment = (lambda w, r=arng: words_aug(w, r)) if words_aug else None
            wav, segments = synthesize_clip(rng, bg, positives, negatives, self.duration_s, self.sample_rate,
                                            self.max_positives, self.max_negatives,
                                            self.positive_gain_db, self.background_gain_db,
                                            positive_guard_s=self.label_seconds, hard_negatives=hard,
                                            hard_negative_fraction=self.hard_negative_fraction,
                                            mined_negatives=mined, mined_fraction=self.mined_fraction,
                                            real_speech=real, word_augment=word_augment)
            words = [s for s in segments if s["kind"] == "positive"]
            speakers = sorted({s["speaker"] for s in segments if s["speaker"]})
            meta = {"duration": len(wav) / self.sample_rate, "sample_rate": self.sample_rate,
                    "speaker": ",".join(speakers), "segments": segments, "background": bg_meta["path"]}
            if clip_aug is not None:
                wav = clip_aug(wav, arng)
                peak = float(np.max(np.abs(wav))) if wav.size else 0.0
                if peak > PEAK_LIMIT:
                    wav = (wav * np.float32(PEAK_LIMIT / peak)).astype(np.float32)
                meta["augment"] = clip_aug.last
            yield {"__key__": f"{split}-{i:06d}", "audio": wav, "sample_rate": self.sample_rate,
                   "txt": " ".join(s["text"] for s in words), "json": meta}
        if augmenters is not None:
            for stage, aug in zip(("words", "clip"), augmenters):
                log.info("clips: %s %s augmentation: applied %s, skipped %s", split, stage,
                         dict(sorted(aug.applied.items())), dict(sorted(aug.skipped.items())))
