"""Request audio → 16 kHz mono float32: formats, rates, channels, limits and the refusals (status + reason)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import soundfile as sf

from seqflow.config import load_config
from seqflow.errors import ConfigError
from seqflow.serve.audio_input import AudioInputError, body_kind, from_bytes, from_json, pcm16_to_float
from seqflow.serve.settings import ServeSettings

SR = 16000


def _tone(seconds: float, sr: int, channels: int = 1, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    x = (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)
    return x if channels == 1 else np.stack([x, -0.5 * x], axis=1)


def _bytes(wav: np.ndarray, sr: int, fmt: str, subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wav, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def _refused(fn, *args) -> AudioInputError:
    with pytest.raises(AudioInputError) as e:
        fn(*args)
    assert "\n" not in str(e.value) and str(e.value)
    return e.value


@pytest.mark.parametrize("fmt,sr,channels", [("WAV", 44100, 2), ("FLAC", 16000, 1), ("OGG", 22050, 2),
                                             ("WAV", 8000, 1)])
def test_bytes_are_decoded_resampled_and_downmixed(fmt, sr, channels) -> None:
    src = _tone(1.5, sr, channels)
    a = from_bytes(_bytes(src, sr, fmt), SR, 60.0)
    assert a.wav.dtype == np.float32 and a.wav.shape == (int(1.5 * SR),)
    assert (a.sample_rate_in, a.channels, a.duration_s) == (sr, channels, pytest.approx(1.5))
    expected = src.mean(axis=1) if channels == 2 else src  # stereo (x, -x/2) averages to x/4
    level = float(np.sqrt(np.mean(expected ** 2)))
    assert float(np.sqrt(np.mean(a.wav ** 2))) == pytest.approx(level, rel=0.05)  # same tone, not scaled or clipped
    spectrum = np.abs(np.fft.rfft(a.wav))
    assert np.argmax(spectrum) * SR / len(a.wav) == pytest.approx(440.0, abs=2.0)  # resampled, not re-pitched


def test_refusals_name_status_and_reason() -> None:
    assert _refused(from_bytes, b"", SR, 60.0).status == 400
    e = _refused(from_bytes, b"definitely not audio", SR, 60.0)
    assert (e.status, e.reason) == (400, "not_audio") and "0x" not in str(e)
    e = _refused(from_bytes, _bytes(_tone(3.0, SR), SR, "FLAC"), SR, 2.0)
    assert (e.status, e.reason) == (413, "audio_too_long") and "3.0 s" in str(e)
    nan = np.array([0.1, np.nan, 0.2] * 100, dtype=np.float32)
    assert _refused(from_bytes, _bytes(nan, SR, "WAV", "FLOAT"), SR, 60.0).reason == "nan_or_inf"
    assert _refused(from_bytes, _bytes(np.zeros(0, np.float32), SR, "WAV"), SR, 60.0).reason in ("empty", "not_audio")


def test_json_audio() -> None:
    a = from_json(json.dumps({"audio": _tone(0.5, 8000).tolist(), "sample_rate": 8000}).encode(), SR, 60.0)
    assert a.wav.shape == (SR // 2,) and a.source == "json" and a.sample_rate_in == 8000
    stereo = from_json(json.dumps({"audio": [[0.2, 0.4]] * 1600, "sample_rate": SR}).encode(), SR, 60.0)
    assert stereo.channels == 2 and np.allclose(stereo.wav, 0.3)
    cases = [(b"{not json", 400, "bad_json"),
             (b'{"audio": [0.1, 0.2]}', 422, "invalid_json_audio"),                       # no sample_rate
             (b'{"samples": [0.1], "sample_rate": 16000}', 422, "invalid_json_audio"),
             (b'{"audio": [0.1, "x"], "sample_rate": 16000}', 422, "invalid_json_audio"),
             (b'{"audio": [0.1], "sample_rate": 12.5}', 422, "invalid_json_audio"),
             (b'{"audio": [0.1], "sample_rate": 100}', 422, "invalid_json_audio"),
             (b'{"audio": [0.1, NaN], "sample_rate": 16000}', 400, "nan_or_inf"),
             (b'{"audio": [], "sample_rate": 16000}', 400, "empty"),
             (json.dumps({"audio": [0.0] * 3 * SR, "sample_rate": SR}).encode(), 413, "audio_too_long")]
    for body, status, reason in cases:
        e = _refused(from_json, body, SR, 2.0)
        assert (e.status, e.reason) == (status, reason), (body[:40], e)


def test_content_types_and_pcm() -> None:
    assert [body_kind(t) for t in (None, "audio/wav", "audio/flac; x=1", "application/octet-stream",
                                   "application/json; charset=utf-8", "multipart/form-data; boundary=x")] == \
        ["bytes", "bytes", "bytes", "bytes", "json", "multipart"]
    e = _refused(body_kind, "text/plain")
    assert (e.status, e.reason) == (415, "unsupported_media_type")
    pcm = np.array([0, 16384, -32768, 32767], dtype="<i2").tobytes()
    assert pcm16_to_float(pcm).tolist() == [0.0, 0.5, -1.0, pytest.approx(32767 / 32768)]


def test_settings_from_the_config_section() -> None:
    s = ServeSettings.from_config(load_config(["serve.limits.max_body_mb=2", "serve.vad.enabled=true"]).serve)
    assert (s.max_body_bytes, s.max_audio_s, s.vad_enabled, s.poll_interval_s) == (2 * 2**20, 60.0, True, 10.0)
    with pytest.raises(ConfigError, match="max_audio_s"):
        ServeSettings.from_config({"limits": {"max_audio_s": 0}})
    with pytest.raises(ConfigError, match="threshold"):
        ServeSettings.from_config({"vad": {"threshold": 2}})
