"""Generated background noise for trigger-word clips: white, pink, brown, mains hum, babble.

Everything is drawn from the ``numpy.random.Generator`` passed in, so a seed gives the same
samples. Levels are normalised to an RMS between 0.05 and 0.1 (about -26 to -20 dBFS) and the
peak is kept below 0.98: never clipped.

>>> wav = generate_background("pink", 2.0, 16000, np.random.default_rng(0))
>>> wav.shape, wav.dtype
((32000,), dtype('float32'))
"""

from __future__ import annotations

import numpy as np

from seqflow.audio.resample import resample
from seqflow.errors import ConfigError

BACKGROUND_KINDS = ("white", "pink", "brown", "hum", "babble")
RMS_RANGE = (0.05, 0.1)
MAX_PEAK = 0.98


def _coloured(n: int, sr: int, rng: np.random.Generator, exponent: float) -> np.ndarray:
    """Gaussian noise whose power falls as ``1/f**exponent`` (flat below 20 Hz, no DC)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / sr)
    spec *= 1.0 / np.maximum(freqs, 20.0) ** (exponent / 2.0)
    spec[0] = 0.0
    return np.fft.irfft(spec, n)


def _hum(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Mains hum: 50 or 60 Hz and harmonics (odd ones stronger), slow drift, a little hiss."""
    f0 = float(rng.choice([50.0, 60.0])) * (1.0 + rng.uniform(-0.002, 0.002))
    t = np.arange(n) / sr
    drift = 1.0 + 0.001 * np.sin(2 * np.pi * rng.uniform(0.05, 0.3) * t + rng.uniform(0, 2 * np.pi))
    phase = np.mod(2 * np.pi * f0 * np.cumsum(drift) / sr, 2 * np.pi).astype(np.float32)
    out = np.zeros(n, dtype=np.float32)
    for k in range(1, 9):  # float32 sin is vectorised (several times faster), precise enough here
        amp = (1.0 if k % 2 else 0.5) / k * rng.uniform(0.5, 1.0)
        out += np.float32(amp) * np.sin(np.float32(k) * phase + np.float32(rng.uniform(0, 2 * np.pi)))
    out = out.astype(np.float64) / (np.sqrt((out.astype(np.float64) ** 2).mean()) + 1e-12)
    return out + 0.03 * rng.standard_normal(n)


def _babble(n: int, sr: int, rng: np.random.Generator, tts, words: list[str], voices: list[str]) -> np.ndarray:
    """Several overlapping talkers saying random ``words`` in random ``voices``."""
    if tts is None or not words:
        raise ConfigError("babble background needs a TTS engine and a non-empty word list")
    voices = list(voices) or ["en-us"]
    pool = []
    for _ in range(min(24, 2 * len(words))):
        word = words[int(rng.integers(len(words)))]
        voice = voices[int(rng.integers(len(voices)))]
        wav, tts_sr = tts.render(word, voice=voice, rate_wpm=int(rng.integers(130, 201)),
                                 pitch=int(rng.integers(20, 81)))
        if len(wav):
            pool.append(resample(wav, tts_sr, sr).astype(np.float64))
    if not pool:
        raise ConfigError("babble background: the TTS engine rendered no audio")
    out = np.zeros(n)
    for _ in range(int(rng.integers(4, 8))):  # talkers
        pos = int(rng.uniform(0.0, 0.5) * sr)
        gain = rng.uniform(0.4, 1.0)
        while pos < n:
            clip = pool[int(rng.integers(len(pool)))]
            end = min(n, pos + len(clip))
            out[pos:end] += gain * rng.uniform(0.6, 1.0) * clip[: end - pos]
            pos = end + int(rng.uniform(0.03, 0.3) * sr)
    return out


def generate_background(kind: str, seconds: float, sr: int, rng: np.random.Generator, tts=None,
                        words: list[str] | None = None, voices: list[str] | None = None) -> np.ndarray:
    """Generate ``seconds`` of background noise.

    Args:
        kind: one of :data:`BACKGROUND_KINDS` (``white``, ``pink``, ``brown``, ``hum``, ``babble``).
        seconds: duration [s].
        sr: sample rate [Hz].
        rng: source of randomness (the output is a function of its state).
        tts: :class:`seqflow.data.tts.EspeakTTS`, needed for ``babble``.
        words: words spoken in ``babble`` (use negatives, never the trigger word).
        voices: voices used for ``babble`` (e.g. only one split's voices); default ``en-us``.

    Returns:
        ``(round(seconds * sr),)`` float32, RMS in [0.05, 0.1], peak at most 0.98.

    Raises:
        ConfigError: unknown kind, non-positive duration, babble without TTS/words.
    """
    n = int(round(seconds * sr))
    if n <= 0:
        raise ConfigError(f"background duration must be positive, got {seconds} s")
    if kind == "white":
        wav = rng.standard_normal(n)
    elif kind == "pink":
        wav = _coloured(n, sr, rng, 1.0)
    elif kind == "brown":
        wav = _coloured(n, sr, rng, 2.0)
    elif kind == "hum":
        wav = _hum(n, sr, rng)
    elif kind == "babble":
        wav = _babble(n, sr, rng, tts, list(words or []), list(voices or []))
    else:
        raise ConfigError(f"unknown background kind {kind!r}; valid kinds: {', '.join(BACKGROUND_KINDS)}")
    target = rng.uniform(*RMS_RANGE)
    rms = float(np.sqrt((wav**2).mean()))
    wav = wav * (target / rms) if rms > 0 else wav
    peak = float(np.abs(wav).max())
    if peak > MAX_PEAK:
        wav = wav * (MAX_PEAK / peak)
    return wav.astype(np.float32)
