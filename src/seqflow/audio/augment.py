"""Waveform augmentation for training audio: rooms, channels, levels, speed and pitch.

Pure numpy / scipy / soxr functions on mono float32 waveforms, plus :class:`Augmenter`, a chain
built from a config mapping ``{transform: {p: probability, <ranges>}}``. Transforms always run in
the order of :data:`TRANSFORMS`; each fires with its ``p`` and draws its parameters from the
``np.random.Generator`` it is given (the only source of randomness: equal generators give equal
outputs, byte for byte).

===========  ==================================================================================
transform    config keys (defaults)
===========  ==================================================================================
speed        ``factor: [0.9, 1.1]`` (tempo and pitch; length / factor; segment times / factor)
pitch        ``semitones: [-2, 2]`` (phase vocoder + soxr, length kept; librosa)
reverb       none: a RIR drawn from the augmenter's :class:`~seqflow.audio.rooms.RirBank`
noise        ``snr_db: [0, 20]``: a random stretch of one of the augmenter's noise recordings,
             at this SNR relative to the input's RMS
eq           ``bands: 3``, ``freq_hz: [100, 6000]`` (log-uniform), ``gain_db: [-6, 6]``,
             ``q: [0.7, 2.0]``: peaking biquads
bandlimit    ``lowpass_hz: [3000, 7500]``, ``highpass_hz: [50, 300]``: 4th-order Butterworth both
telephone    ``laws: [mu, a]``, ``band_hz: [300, 3400]``: 8 kHz round trip, 8-bit companding
gain         ``dbfs: [-35, -15]``: RMS level
===========  ==================================================================================

A transform whose output is empty, non-finite or silent (peak < :data:`SILENCE_PEAK`), or a
reverb whose RIR is empty, is skipped (the input passes on) and counted in
``Augmenter.skipped[name]``; ``Augmenter.applied[name]`` counts the others, and
``Augmenter.last`` lists what the latest call applied with the parameters it drew.

>>> aug = Augmenter({"eq": {"p": 1.0}, "gain": {"p": 1.0, "dbfs": [-30, -20]}})
>>> out = aug(np.random.default_rng(0).standard_normal(16000).astype(np.float32), np.random.default_rng(1))
>>> out.shape, out.dtype.name, dict(aug.applied)
((16000,), 'float32', {'eq': 1, 'gain': 1})
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Mapping, Sequence

import numpy as np
import scipy.signal as ss
import soxr

from seqflow.audio.rooms import RirBank
from seqflow.errors import ConfigError

TRANSFORMS = ("speed", "pitch", "reverb", "noise", "eq", "bandlimit", "telephone", "gain")
SILENCE_PEAK = 1e-4
TELEPHONE_SR = 8000

DEFAULTS: dict[str, dict[str, Any]] = {
    "speed": {"factor": (0.9, 1.1)},
    "pitch": {"semitones": (-2.0, 2.0)},
    "reverb": {},
    "noise": {"snr_db": (0.0, 20.0)},
    "eq": {"bands": 3, "freq_hz": (100.0, 6000.0), "gain_db": (-6.0, 6.0), "q": (0.7, 2.0)},
    "bandlimit": {"lowpass_hz": (3000.0, 7500.0), "highpass_hz": (50.0, 300.0)},
    "telephone": {"laws": ("mu", "a"), "band_hz": (300.0, 3400.0)},
    "gain": {"dbfs": (-35.0, -15.0)},
}


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


# --- transforms -------------------------------------------------------------------------------

def change_speed(wav: np.ndarray, sr: int, factor: float) -> np.ndarray:
    """Play ``factor`` times faster (tempo and pitch): ``round(len / factor)`` samples (soxr HQ)."""
    if factor == 1.0:
        return wav.astype(np.float32, copy=True)
    return soxr.resample(wav.astype(np.float32, copy=False), sr * float(factor), sr, quality="HQ").astype(np.float32)


def shift_pitch(wav: np.ndarray, sr: int, semitones: float) -> np.ndarray:
    """Pitch by ``semitones`` at unchanged length (librosa's phase vocoder + soxr; ~3 ms per 0.6 s word)."""
    import librosa

    out = librosa.effects.pitch_shift(wav.astype(np.float32, copy=False), sr=sr, n_steps=float(semitones),
                                      res_type="soxr_hq")
    return np.asarray(out, dtype=np.float32)


def reverberate(wav: np.ndarray, rir: np.ndarray, delay: int = 0) -> np.ndarray:
    """Convolve with ``rir`` (direct path at index ``delay``) keeping length and timing: the output's
    sample ``t`` is the room's response at ``t`` to the input aligned on the direct path."""
    if rir.size == 0:
        return np.zeros(0, dtype=np.float32)
    y = ss.fftconvolve(wav.astype(np.float32, copy=False), rir.astype(np.float32, copy=False))
    return np.ascontiguousarray(y[delay:delay + len(wav)], dtype=np.float32)


def mix_noise(wav: np.ndarray, noise: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Add a random stretch of ``noise`` (looped if short) at ``snr_db`` below ``wav``'s RMS."""
    n = len(wav)
    if noise.size == 0 or n == 0:
        return wav.astype(np.float32, copy=True)
    if len(noise) < n:
        noise = np.tile(noise, -(-n // len(noise)) + 1)
    start = int(rng.integers(0, len(noise) - n + 1))
    seg = noise[start:start + n].astype(np.float64)
    r = _rms(seg)
    if r < 1e-10:
        return wav.astype(np.float32, copy=True)
    scale = _rms(wav) * 10.0 ** (-float(snr_db) / 20.0) / r
    return (wav + scale * seg).astype(np.float32)


def peaking_sos(sr: int, freq_hz: float, gain_db: float, q: float) -> np.ndarray:
    """One peaking-EQ biquad (RBJ audio-EQ cookbook) as a ``(1, 6)`` sos row."""
    a = 10.0 ** (gain_db / 40.0)
    w0 = 2.0 * np.pi * freq_hz / sr
    alpha = np.sin(w0) / (2.0 * q)
    b = np.array([1.0 + alpha * a, -2.0 * np.cos(w0), 1.0 - alpha * a])
    den = np.array([1.0 + alpha / a, -2.0 * np.cos(w0), 1.0 - alpha / a])
    return np.concatenate([b / den[0], den / den[0]])[None, :]


def equalize(wav: np.ndarray, sr: int, bands: Sequence[tuple[float, float, float]]) -> np.ndarray:
    """Apply peaking biquads ``(freq_hz, gain_db, q)`` in series."""
    if not bands:
        return wav.astype(np.float32, copy=True)
    sos = np.concatenate([peaking_sos(sr, f, g, q) for f, g, q in bands])
    return ss.sosfilt(sos, wav).astype(np.float32)


def band_limit(wav: np.ndarray, sr: int, lowpass_hz: float | None = None, highpass_hz: float | None = None,
               order: int = 4) -> np.ndarray:
    """Butterworth low-pass and/or high-pass (``None``: that side untouched)."""
    out = wav.astype(np.float64)
    if lowpass_hz is not None and lowpass_hz < 0.49 * sr:
        out = ss.sosfilt(ss.butter(order, lowpass_hz, "lowpass", fs=sr, output="sos"), out)
    if highpass_hz is not None and highpass_hz > 0:
        out = ss.sosfilt(ss.butter(order, highpass_hz, "highpass", fs=sr, output="sos"), out)
    return out.astype(np.float32)


def compand(x: np.ndarray, law: str = "mu", bits: int = 8) -> np.ndarray:
    """Compress with μ-law (μ = 255) or A-law (A = 87.6), quantize to ``bits``, expand; input clipped to [-1, 1]."""
    x = np.clip(x.astype(np.float64), -1.0, 1.0)
    s, m = np.sign(x), np.abs(x)
    if law == "mu":
        mu = 255.0
        y = np.log1p(mu * m) / np.log1p(mu)
    elif law == "a":
        a = 87.6
        k = 1.0 + np.log(a)
        y = np.where(m < 1.0 / a, a * m / k, (1.0 + np.log(np.maximum(a * m, 1e-30))) / k)
    else:
        raise ConfigError(f"telephone: law {law!r} is not 'mu' or 'a'")
    levels = 2 ** (bits - 1) - 1
    y = np.round(y * levels) / levels
    if law == "mu":
        m = np.expm1(y * np.log1p(255.0)) / 255.0
    else:
        a = 87.6
        t = y * (1.0 + np.log(a))
        m = np.where(y < 1.0 / (1.0 + np.log(a)), t / a, np.exp(t - 1.0) / a)
    return (s * m).astype(np.float32)


def telephone(wav: np.ndarray, sr: int, law: str = "mu", band_hz: Sequence[float] | None = (300.0, 3400.0),
              bits: int = 8) -> np.ndarray:
    """Narrow-band telephone channel: to 8 kHz (soxr), band-pass ``band_hz``, 8-bit companding, back to ``sr``."""
    x = soxr.resample(wav.astype(np.float32, copy=False), sr, TELEPHONE_SR, quality="HQ")
    if band_hz:
        lo, hi = float(band_hz[0]), min(float(band_hz[1]), 0.49 * TELEPHONE_SR)
        x = ss.sosfilt(ss.butter(4, [lo, hi], "bandpass", fs=TELEPHONE_SR, output="sos"), x)
    y = soxr.resample(compand(x, law, bits), TELEPHONE_SR, sr, quality="HQ")
    n = len(wav)
    return np.pad(y, (0, max(0, n - len(y))))[:n].astype(np.float32)


def set_level(wav: np.ndarray, dbfs: float) -> np.ndarray:
    """Scale to an RMS of ``dbfs`` [dB re full scale]; silence stays silence."""
    r = _rms(wav)
    if r < 1e-10:
        return wav.astype(np.float32, copy=True)
    return (wav * np.float32(10.0 ** (dbfs / 20.0) / r)).astype(np.float32)


# --- the chain ----------------------------------------------------------------------------------

def _uniform(rng: np.random.Generator, lo_hi: Sequence[float]) -> float:
    return float(rng.uniform(float(lo_hi[0]), float(lo_hi[1])))


class Augmenter:
    """A random chain of the transforms named in ``config`` (any subset of :data:`TRANSFORMS`).

    Args:
        config: ``{name: {"p": probability, <ranges, see the module table>}}``; missing ranges
            take :data:`DEFAULTS`; a transform with ``p: 0`` or absent never runs.
        sample_rate: of every waveform passed in [Hz].
        rirs: the bank ``reverb`` draws from (required when ``reverb`` has ``p > 0``).
        noises: recordings ``noise`` draws from (float32 at ``sample_rate``); with none,
            ``noise`` is inactive.
        where: the config path named in error messages (``augment.train.clip`` ...).

    Raises:
        ConfigError: an unknown transform or key, a probability outside [0, 1], reverb without a bank.
    """

    def __init__(self, config: Mapping[str, Mapping[str, Any]] | None, sample_rate: int = 16000,
                 rirs: RirBank | None = None, noises: Sequence[np.ndarray] = (), where: str = "augment") -> None:
        self.sample_rate, self.rirs, self.noises = int(sample_rate), rirs, list(noises)
        self.params: dict[str, dict[str, Any]] = {}
        for name, raw in dict(config or {}).items():
            if name not in DEFAULTS:
                raise ConfigError(f"{where}: unknown transform {name!r} (known: {', '.join(TRANSFORMS)})")
            raw = dict(raw or {})
            unknown = set(raw) - set(DEFAULTS[name]) - {"p"}
            if unknown:
                raise ConfigError(f"{where}.{name}: unknown key(s) {sorted(unknown)}")
            p = float(raw.get("p", 0.0))
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"{where}.{name}.p: {p} is not a probability")
            if p > 0:
                self.params[name] = {**DEFAULTS[name], **raw, "p": p}
        if "reverb" in self.params and rirs is None:
            raise ConfigError(f"{where}.reverb: p > 0 but no RIR bank given")
        self.skipped: Counter = Counter()
        self.applied: Counter = Counter()
        self.last: list[dict] = []  # what the latest call applied, with its drawn parameters

    @property
    def active(self) -> tuple[str, ...]:
        """Transforms that can fire, in chain order."""
        return tuple(t for t in TRANSFORMS if t in self.params and (t != "noise" or self.noises))

    def __bool__(self) -> bool:
        return bool(self.active)

    def _one(self, name: str, wav: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float, dict]:
        """Run transform ``name`` with freshly drawn parameters → ``(out, speed factor, drawn parameters)``."""
        p, sr = self.params[name], self.sample_rate
        if name == "speed":
            f = _uniform(rng, p["factor"])
            return change_speed(wav, sr, f), f, {"factor": round(f, 4)}
        if name == "pitch":
            st = _uniform(rng, p["semitones"])
            return shift_pitch(wav, sr, st), 1.0, {"semitones": round(st, 3)}
        if name == "reverb":
            i = int(rng.integers(0, len(self.rirs))) if len(self.rirs) else -1
            rir = self.rirs.rirs[i] if i >= 0 else np.zeros(0, dtype=np.float32)
            if rir.size == 0 or not np.isfinite(rir).all() or not rir.any():
                return np.zeros(0, dtype=np.float32), 1.0, {}
            info = {"bank": self.rirs.name, "index": i, "rt60": round(float(self.rirs.rt60[i]), 3)}
            return reverberate(wav, rir, int(self.rirs.delays[i])), 1.0, info
        if name == "noise":
            k = int(rng.integers(0, len(self.noises)))
            snr = _uniform(rng, p["snr_db"])
            return mix_noise(wav, self.noises[k], snr, rng), 1.0, {"index": k, "snr_db": round(snr, 2)}
        if name == "eq":
            lo, hi = np.log(float(p["freq_hz"][0])), np.log(min(float(p["freq_hz"][1]), 0.45 * sr))
            bands = [(float(np.exp(rng.uniform(lo, hi))), _uniform(rng, p["gain_db"]), _uniform(rng, p["q"]))
                     for _ in range(int(p["bands"]))]
            return equalize(wav, sr, bands), 1.0, {"bands": [[round(x, 2) for x in b] for b in bands]}
        if name == "bandlimit":
            lp, hp = _uniform(rng, p["lowpass_hz"]), _uniform(rng, p["highpass_hz"])
            return band_limit(wav, sr, lp, hp), 1.0, {"lowpass_hz": round(lp), "highpass_hz": round(hp)}
        if name == "telephone":
            laws = list(p["laws"])
            law = str(laws[int(rng.integers(0, len(laws)))])
            return telephone(wav, sr, law, p["band_hz"]), 1.0, {"law": law}
        if name == "gain":
            db = _uniform(rng, p["dbfs"])
            return set_level(wav, db), 1.0, {"dbfs": round(db, 2)}
        raise ConfigError(f"augment: unknown transform {name!r}")

    def apply(self, wav: np.ndarray, rng: np.random.Generator,
              segments: Sequence[Mapping[str, Any]] | None = None) -> tuple[np.ndarray, list[dict], float]:
        """Run the chain; return ``(wav, segments, speed)`` where ``speed`` is the product of applied
        speed factors and each segment's ``start`` / ``end`` [s] is divided by it (clamped to the
        new duration). The input is never modified."""
        out, speed = np.asarray(wav, dtype=np.float32), 1.0
        self.last = []
        if out.size and float(np.max(np.abs(out))) >= SILENCE_PEAK:  # nothing to shape in silence
            for name in self.active:
                if rng.random() >= self.params[name]["p"]:
                    continue
                with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # checked right below
                    y, f, info = self._one(name, out, rng)
                peak = float(np.max(np.abs(y))) if y.size else 0.0  # NaN / inf propagate into the peak
                if not np.isfinite(peak) or peak < SILENCE_PEAK:
                    self.skipped[name] += 1
                    continue
                self.applied[name] += 1
                self.last.append({"name": name, **info})
                out, speed = y, speed * f
        if out is wav:
            out = out.copy()
        dur = len(out) / self.sample_rate
        segs = [dict(s) for s in (segments or ())]
        if speed != 1.0:
            for s in segs:
                s["start"], s["end"] = min(s["start"] / speed, dur), min(s["end"] / speed, dur)
        return out, segs, speed

    def __call__(self, wav: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The augmented waveform (see :meth:`apply`)."""
        return self.apply(wav, rng)[0]


def stage_config(cfg: Mapping[str, Any] | None, where: str, no_speed: bool = False) -> dict[str, dict[str, Any]]:
    """A plain ``{transform: params}`` dict from a config node (``augment.train.clip`` ...);
    ``no_speed``: a stage whose length must stay fixed (whole clips) rejects ``speed``."""
    out = {str(k): dict(v or {}) for k, v in dict(cfg or {}).items()}
    if no_speed and float(out.get("speed", {}).get("p", 0.0)) > 0:
        raise ConfigError(f"{where}.speed: speed changes apply to words only (a clip keeps its length "
                          f"and the label window after each positive)")
    return out

