"""Audio I/O through soundfile: decode to mono float32, encode FLAC/WAV, atomic writes.

Every decode failure becomes :class:`seqflow.errors.AudioDecodeError` naming the file and a
short reason, so callers can quarantine instead of crash.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from seqflow.audio.resample import resample
from seqflow.errors import AudioDecodeError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif")


def _finish(data: np.ndarray, sr: int, name: str, target_sr: int | None, mono: bool) -> tuple[np.ndarray, int]:
    if data.ndim == 2 and mono:
        data = data.mean(axis=1)
    data = np.ascontiguousarray(data, dtype=np.float32)
    if data.size == 0:
        raise AudioDecodeError(name, "empty", "no samples")
    if not np.isfinite(data).all():
        raise AudioDecodeError(name, "nan_or_inf", "non-finite samples")
    if target_sr is not None and sr != target_sr:
        data, sr = resample(data, sr, target_sr), target_sr
    return data, sr


def read_audio(path: str | os.PathLike, target_sr: int | None = None, mono: bool = True) -> tuple[np.ndarray, int]:
    """Decode an audio file (WAV, FLAC, OGG, ... anything libsndfile reads).

    Args:
        path: audio file.
        target_sr: resample to this rate [Hz] with soxr; ``None`` keeps the file's rate.
        mono: down-mix channels by averaging.

    Returns:
        ``(samples, sample_rate)``: ``(S,)`` float32 in [-1, 1] when ``mono``, else ``(S, C)``.

    Raises:
        AudioDecodeError: reason ``missing``, ``unreadable``, ``empty`` or ``nan_or_inf``.
    """
    p = Path(path)
    if not p.is_file():
        raise AudioDecodeError(str(p), "missing", "no such file")
    try:
        data, sr = sf.read(str(p), dtype="float32", always_2d=False)
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        raise AudioDecodeError(str(p), "unreadable", str(exc).splitlines()[0][:200]) from exc
    return _finish(data, sr, str(p), target_sr, mono)


def decode_audio_bytes(data: bytes, target_sr: int | None = None, name: str = "<bytes>") -> tuple[np.ndarray, int]:
    """Decode WAV/FLAC/OGG bytes to a mono ``(S,)`` float32 waveform; see :func:`read_audio`.

    Raises:
        AudioDecodeError: the bytes are not decodable audio, or are empty / non-finite.
    """
    if not data:
        raise AudioDecodeError(name, "empty", "zero bytes")
    try:
        wav, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=False)
    except Exception as exc:
        raise AudioDecodeError(name, "unreadable", str(exc).splitlines()[0][:200]) from exc
    return _finish(wav, sr, name, target_sr, True)


def encode_audio(wav: np.ndarray, sample_rate: int, fmt: str = "flac") -> bytes:
    """Encode a mono float32 waveform as 16-bit PCM ``flac`` or ``wav`` bytes (deterministic)."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(wav, -1.0, 1.0), sample_rate, format=fmt.upper(), subtype="PCM_16")
    return buf.getvalue()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and an atomic rename."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_audio_atomic(path: str | os.PathLike, wav: np.ndarray, sample_rate: int) -> None:
    """Write a mono waveform as 16-bit FLAC or WAV (by suffix), atomically."""
    fmt = Path(path).suffix.lstrip(".").lower() or "flac"
    write_bytes_atomic(path, encode_audio(wav, sample_rate, fmt))
