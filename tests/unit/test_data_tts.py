"""espeak-ng through ctypes: voices, renders, reproducibility after reset, phonemes, trimming."""

from __future__ import annotations

import numpy as np
import pytest

from seqflow.data.tts import EspeakTTS, trim_silence
from seqflow.errors import ConfigError


@pytest.fixture(scope="module")
def tts() -> EspeakTTS:
    return EspeakTTS()


def test_singleton_and_voice_lists(tts):
    assert EspeakTTS() is tts
    assert {"en-us", "en-gb", "en-gb-scotland", "en-029"} <= set(tts.accents("en"))
    assert {"m1", "m7", "f1", "f5"} <= set(tts.variants())
    assert "en-us" in tts.voices()


def test_render_is_mono_float32_speech(tts):
    wav, sr = tts.render("activate", voice="en-us+f3", rate_wpm=175, pitch=50)
    assert sr == 22050 and wav.dtype == np.float32 and wav.ndim == 1
    assert 0.3 < len(wav) / sr < 1.5
    assert 0.05 < np.abs(wav).max() <= 1.0
    slow, _ = tts.render("activate", voice="en-us+f3", rate_wpm=100)
    assert len(slow) > len(wav) * 1.3  # the rate parameter reaches espeak


def test_voices_sound_different(tts):
    a, _ = tts.render("hello", voice="en-us+m1")
    b, _ = tts.render("hello", voice="en-gb-scotland+f2")
    assert len(a) != len(b) or not np.array_equal(a, b)


def test_reset_makes_renders_reproducible(tts):
    calls = [("activate", "en-us+f3", 150, 40), ("table", "en-gb+m2", 190, 70), ("activate", "en-us+f3", 150, 40)]
    runs = []
    for _ in range(2):
        tts.reset(seed=7)
        runs.append([tts.render(t, voice=v, rate_wpm=r, pitch=p)[0] for t, v, r, p in calls])
    for a, b in zip(*runs):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("voice, bad, listed", [("en-xx+m1", "en-xx", ["en-us", "en-gb-scotland"]),
                                                ("en-us+zz9", "zz9", ["m1", "f5"])])
def test_unknown_voice_is_config_error(tts, voice, bad, listed):
    with pytest.raises(ConfigError) as exc:
        tts.render("hello", voice=voice)
    msg = str(exc.value)
    assert voice in msg and bad in msg and all(v in msg for v in listed)


def test_phonemes(tts):
    ph = tts.phonemes("activate")
    assert "æ" in ph and "eɪ" in ph and " " not in ph
    assert len(tts.phonemes("hey jarvis").split()) == 2  # words separated by a space


def test_trim_silence_keeps_the_sound():
    sr = 16000
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(sr // 2) / sr).astype(np.float32)
    padded = np.concatenate([np.zeros(sr, np.float32), tone, np.zeros(sr, np.float32)])
    out = trim_silence(padded, sr, pad_s=0.01)
    assert abs(len(out) - len(tone)) <= int(0.03 * sr)
    assert trim_silence(np.zeros(100, np.float32), sr).size == 0
