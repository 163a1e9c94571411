"""Real human speech as negatives in TRAIN clips only (``clips.real_speech``).

Models trained on TTS words alone have never heard a real voice and fire on it. With
``clips.real_speech.dirs`` pointing at folders of real speech (by default the train-only Asterisk
banks ``<eval-data>/train-speech/asterisk-core-sounds-{es,ru}-wav`` that ``make eval-data`` builds,
:mod:`seqflow.evalsets.train_noise`; no evaluation set uses those packages), a train clip draws
``fraction`` of its inserted negatives as a random ``span_s`` cut (default 0.5–3 s) of a random
recording, level-matched and placed like any negative word (never over a positive or its label
window); its segment is ``{"kind": "negative", "real_speech": True, ...}``. Val and test clips never
use them.

Folders that do not exist are skipped (one log line per :class:`~seqflow.shards.clips.ClipSource`),
so a checkout without eval-data makes exactly today's clips and shard config hash; when used, the
files (name and size) and the settings join the hash (:func:`real_speech_fingerprint`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from seqflow.audio.io import AUDIO_SUFFIXES, read_audio
from seqflow.errors import AudioDecodeError, ConfigError

log = logging.getLogger("seqflow.shards.clips")
DEFAULT_SPAN_S = (0.5, 3.0)
Word = tuple[np.ndarray, Mapping[str, Any]]  # (waveform (S,), meta), as in seqflow.shards.clips


@dataclass(frozen=True)
class SpeechBank:
    """Decoded recordings ``pool`` and how :func:`~seqflow.shards.clips.synthesize_clip` uses them:
    with probability ``fraction`` an inserted negative is :meth:`draw`; falsy when nothing to draw."""

    pool: Sequence[Word]
    fraction: float
    span_s: tuple[float, float] = DEFAULT_SPAN_S

    def __bool__(self) -> bool:
        return bool(self.pool) and self.fraction > 0

    def draw(self, rng: np.random.Generator, sample_rate: int) -> list[Word]:
        """A one-word pool: a :func:`cut_snippet` of a random recording, with its meta (three draws)."""
        wav, meta = self.pool[int(rng.integers(0, len(self.pool)))]
        return [(cut_snippet(rng, wav, sample_rate, self.span_s), meta)]


@dataclass
class RealSpeech:
    """``clips.real_speech``: ``dirs`` (folders of recordings, any depth; absent ones skipped),
    ``fraction`` (share of inserted train negatives, 0..1) and ``span_s`` (cut length range [s]).
    :meth:`bank` decodes the files once per instance (one instance per ClipSource)."""

    dirs: tuple[str, ...] = ()
    fraction: float = 0.0
    span_s: tuple[float, float] = DEFAULT_SPAN_S
    _bank: SpeechBank | None = field(default=None, init=False, repr=False)

    @classmethod
    def from_clips(cls, clips: Any) -> "RealSpeech":
        """From the ``clips`` section (OmegaConf node or mapping); missing key → unused.

        Raises:
            ConfigError: ``fraction`` outside ``[0, 1]`` or ``span_s`` not ``0 < lo <= hi``.
        """
        from omegaconf import OmegaConf

        node = clips.get("real_speech") if clips is not None else None
        if node is None:
            return cls()
        node = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
        out = cls(dirs=tuple(str(d) for d in node.get("dirs") or ()), fraction=float(node.get("fraction", 0.0)),
                  span_s=tuple(float(s) for s in node.get("span_s") or DEFAULT_SPAN_S))  # type: ignore[arg-type]
        if not 0.0 <= out.fraction <= 1.0 or len(out.span_s) != 2 or not 0 < out.span_s[0] <= out.span_s[1]:
            raise ConfigError(f"clips.real_speech: fraction must be in [0, 1] and span_s [lo, hi] with "
                              f"0 < lo <= hi, got fraction={out.fraction}, span_s={list(out.span_s)}")
        return out

    def bank(self, sample_rate: int, trim: Callable[[np.ndarray, int], np.ndarray] | None = None) -> SpeechBank:
        """The :class:`SpeechBank` of the existing folders (decoded at ``sample_rate`` and trimmed by
        ``trim`` on the first call, then cached; absent folders logged once)."""
        if self._bank is None:
            self._bank = SpeechBank(load_real_speech(self.files(log_absent=True), sample_rate, trim),
                                    self.fraction, self.span_s)
        return self._bank

    def files(self, log_absent: bool = False) -> list[tuple[Path, Path]]:
        """Audio files under the folders that exist, as ``(folder, file)`` (sorted per folder);
        empty when ``fraction`` is 0. ``log_absent``: one INFO line naming the absent folders."""
        if self.fraction <= 0:
            return []
        present = [Path(d) for d in self.dirs if Path(d).is_dir()]
        absent = [d for d in self.dirs if not Path(d).is_dir()]
        if absent and log_absent:
            log.info("clips: real speech folder(s) absent, skipped (run `make eval-data`): %s", ", ".join(absent))
        return [(d, f) for d in present for f in sorted(d.rglob("*"))
                if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES]


def real_speech_fingerprint(clips: Any) -> dict | None:
    """What of ``clips.real_speech`` changes train clips, for the shard config hash: ``None`` when
    unused (no key, ``fraction`` 0, or no file in the existing folders: the hash stays what it was
    before real speech existed); else fraction, span and ``[folder name/relative file, bytes]``."""
    rs = RealSpeech.from_clips(clips)
    files = rs.files()
    if not files:
        return None
    return {"fraction": rs.fraction, "span_s": list(rs.span_s),
            "files": [[f"{d.name}/{f.relative_to(d).as_posix()}", f.stat().st_size] for d, f in files]}


def load_real_speech(files: list[tuple[Path, Path]], sample_rate: int,
                     trim: Callable[[np.ndarray, int], np.ndarray] | None = None) -> list[Word]:
    """Decode every file once: ``[(wav float32 (S,) at sample_rate, meta)]`` with meta
    ``{"text": "", "speaker": "", "path": "<folder>/<file>", "real_speech": True}``.
    ``trim``: ``(wav, sr) -> wav`` applied to each recording (prompt silence off the ends); undecodable
    or empty files are logged once and left out."""
    pool, bad = [], []
    for d, f in files:
        try:
            wav, _ = read_audio(f, target_sr=sample_rate)
        except AudioDecodeError as exc:
            bad.append(str(exc))
            continue
        wav = trim(wav, sample_rate) if trim is not None else wav
        if wav.size:
            pool.append((wav, {"text": "", "speaker": "", "path": f"{d.name}/{f.relative_to(d).as_posix()}",
                               "real_speech": True}))
    if bad:
        log.warning("clips: skipped %d undecodable real speech file(s), first: %s", len(bad), bad[0])
    return pool


def cut_snippet(rng: np.random.Generator, wav: np.ndarray, sample_rate: int,
                span_s: tuple[float, float] = DEFAULT_SPAN_S) -> np.ndarray:
    """A random cut of ``wav`` ``(S,)``: length uniform in ``span_s`` [s] (the whole recording when
    shorter), start uniform. Returns a float32 copy ``(L,)``, ``L <= S``; two draws from ``rng``."""
    length = min(len(wav), max(1, int(round(rng.uniform(*span_s) * sample_rate))))
    start = int(rng.integers(0, len(wav) - length + 1))
    return wav[start:start + length].astype(np.float32, copy=True)
