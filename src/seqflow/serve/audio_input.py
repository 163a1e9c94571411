"""Request audio → one mono float32 waveform at the model's rate, within the server's limits.

Three request shapes (``Content-Type``):

* raw bytes (``audio/wav``, ``audio/flac``, ``audio/ogg``, ``application/octet-stream`` or none):
  anything libsndfile decodes (WAV, FLAC, OGG/Vorbis, ...);
* ``multipart/form-data``: the first uploaded file part, decoded as above;
* ``application/json``: ``{"audio": [floats], "sample_rate": N}`` (or ``[[l, r], ...]`` frames x
  channels) for short clips.

Any rate is resampled with soxr; several channels are averaged. Every refusal is an
:class:`AudioInputError` with an HTTP status and one line naming the reason:

=========================================  ======  ==================
case                                       status  ``reason``
=========================================  ======  ==================
Content-Type none of the above             415     ``unsupported_media_type``
no bytes / no samples / no file part       400     ``empty``
bytes libsndfile cannot decode             400     ``not_audio``
malformed JSON                             400     ``bad_json``
NaN or Inf samples                         400     ``nan_or_inf``
JSON without ``audio`` / ``sample_rate``,  422     ``invalid_json_audio``
non-numeric samples, rate out of range
audio longer than ``max_audio_s``          413     ``audio_too_long``
=========================================  ======  ==================

>>> a = from_bytes(open("clip.wav", "rb").read(), target_sr=16000, max_audio_s=60)
>>> a.wav.shape, a.sample_rate_in, a.channels          # ((S,), 44100, 2)
"""

from __future__ import annotations

import io
import json
import math
import re
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from seqflow.audio.resample import resample
from seqflow.serve.errors import ApiError

MIN_RATE, MAX_RATE = 1000, 384000
RAW_TYPES = ("audio/", "application/octet-stream")


class AudioInputError(ApiError):
    """A request's audio was refused. ``status``: HTTP status (400, 413, 415, 422);
    ``reason``: short machine-readable reason; ``str(e)``: one human line."""


@dataclass(frozen=True)
class AudioIn:
    """Decoded request audio. wav: ``(S,)`` float32 at the target rate; sample_rate_in [Hz] and
    channels as sent; duration_s of the audio [s]; source: ``bytes`` | ``multipart`` | ``json``."""

    wav: np.ndarray
    sample_rate_in: int
    channels: int
    duration_s: float
    source: str


def body_kind(content_type: str | None) -> str:
    """``"json"``, ``"multipart"`` or ``"bytes"`` for a request's ``Content-Type`` header.

    Raises:
        AudioInputError: 415 for any other media type (e.g. ``text/plain``).
    """
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media in ("", *RAW_TYPES) or media.startswith("audio/"):
        return "bytes"
    if media == "application/json" or media.endswith("+json"):
        return "json"
    if media == "multipart/form-data":
        return "multipart"
    raise AudioInputError(415, "unsupported_media_type",
                          f"unsupported Content-Type {media!r}: send audio bytes (audio/wav, audio/flac, audio/ogg), "
                          "multipart/form-data with a file, or application/json {\"audio\": [...], \"sample_rate\": N}")


def _detail(e: Exception) -> str:
    """libsndfile's message without the ``Error opening <_io.BytesIO object at 0x...>:`` prefix."""
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return re.sub(r"^Error opening <[^>]*>:\s*", "", text)[:160]


def _finish(data: np.ndarray, sr: int, target_sr: int, max_audio_s: float, source: str) -> AudioIn:
    channels = 1 if data.ndim == 1 else int(data.shape[1])
    if data.ndim == 2:
        data = data.mean(axis=1)
    data = np.ascontiguousarray(data, dtype=np.float32)
    if data.size == 0:
        raise AudioInputError(400, "empty", "the audio has no samples")
    duration = data.size / sr
    if duration > max_audio_s:
        raise AudioInputError(413, "audio_too_long", f"the audio is {duration:.1f} s long; the limit is {max_audio_s:g} s")
    if not np.isfinite(data).all():
        raise AudioInputError(400, "nan_or_inf", "the audio contains NaN or Inf samples")
    return AudioIn(resample(data, sr, target_sr), int(sr), channels, float(duration), source)


def from_bytes(data: bytes, target_sr: int, max_audio_s: float, source: str = "bytes") -> AudioIn:
    """Decode WAV/FLAC/OGG (any libsndfile format) bytes; the length is checked from the header
    before the samples are decoded, so an over-long file costs no decoding.

    Raises:
        AudioInputError: ``empty``, ``not_audio``, ``audio_too_long``, ``nan_or_inf`` (see module doc).
    """
    if not data:
        raise AudioInputError(400, "empty", "the request carries no audio bytes")
    try:
        info = sf.info(io.BytesIO(data))
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        raise AudioInputError(400, "not_audio", f"the body is not decodable audio (WAV/FLAC/OGG): {_detail(e)}") from e
    if info.samplerate and info.frames > 0 and info.frames / info.samplerate > max_audio_s:
        raise AudioInputError(413, "audio_too_long", f"the audio is {info.frames / info.samplerate:.1f} s long; "
                                                     f"the limit is {max_audio_s:g} s")
    try:
        wav, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=False)
    except Exception as e:
        raise AudioInputError(400, "not_audio", f"the audio bytes cannot be decoded: {_detail(e)}") from e
    return _finish(wav, sr, target_sr, max_audio_s, source)


def from_json(body: bytes, target_sr: int, max_audio_s: float) -> AudioIn:
    """Decode ``{"audio": [floats] | [[ch0, ch1, ...], ...], "sample_rate": N}``.

    Raises:
        AudioInputError: ``bad_json`` (400), ``invalid_json_audio`` (422: no ``audio`` or
        ``sample_rate``, non-numeric samples, rate outside [1000, 384000] Hz), ``empty``,
        ``audio_too_long``, ``nan_or_inf``.
    """
    try:
        obj = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AudioInputError(400, "bad_json", f"the body is not valid JSON: {e}") from e
    if not isinstance(obj, dict) or "audio" not in obj:
        raise AudioInputError(422, "invalid_json_audio", "the JSON body needs {\"audio\": [floats], \"sample_rate\": N}")
    if obj.get("sample_rate") is None:
        raise AudioInputError(422, "invalid_json_audio",
                              "the JSON body needs \"sample_rate\" (Hz) beside \"audio\": the rate cannot be guessed")
    sr = obj["sample_rate"]
    if isinstance(sr, bool) or not isinstance(sr, (int, float)) or not math.isfinite(sr) or sr != int(sr) \
            or not MIN_RATE <= sr <= MAX_RATE:
        raise AudioInputError(422, "invalid_json_audio",
                              f"sample_rate must be an integer in [{MIN_RATE}, {MAX_RATE}] Hz, got {sr!r}")
    audio = obj["audio"]
    if not isinstance(audio, list):
        raise AudioInputError(422, "invalid_json_audio", "\"audio\" must be a list of numbers (or of [channel] lists)")
    if len(audio) > max_audio_s * sr:
        raise AudioInputError(413, "audio_too_long", f"the audio is {len(audio) / sr:.1f} s long; "
                                                     f"the limit is {max_audio_s:g} s")
    try:
        arr = np.asarray(audio, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise AudioInputError(422, "invalid_json_audio",
                              "\"audio\" must be a list of numbers (or of equal-length [channel] lists)") from e
    if arr.ndim not in (1, 2):
        raise AudioInputError(422, "invalid_json_audio", f"\"audio\" must be (S,) or (S, channels), got shape {arr.shape}")
    return _finish(arr, int(sr), target_sr, max_audio_s, "json")


def pcm16_to_float(data: bytes) -> np.ndarray:
    """16-bit little-endian PCM bytes (even length) → ``(len/2,)`` float32 in [-1, 1)."""
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
