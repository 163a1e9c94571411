"""The silero-vad gate: a detection right after real (espeak) speech is kept, one after silence or
noise is dropped; a stream's ring buffer stays bounded and keeps absolute time."""

from __future__ import annotations

import numpy as np
import pytest

from seqflow.audio.resample import resample
from seqflow.data.tts import EspeakTTS
from seqflow.serve.vad import RING_S, StreamRing, VadGate

SR = 16000


@pytest.fixture(scope="module")
def gate() -> VadGate:
    return VadGate(threshold=0.5, lookback_s=1.5, warmup_s=0.5)


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    wav, sr = EspeakTTS().render("please activate the kitchen lights now", voice="en-us+m3")
    return resample(wav, sr, SR)


def _det(start: float) -> dict:
    return {"start": start, "end": start + 0.3, "score": 0.9}


def test_gate_keeps_detections_after_speech_and_drops_them_elsewhere(gate, speech) -> None:
    rng = np.random.default_rng(0)
    silence = np.zeros(3 * SR, dtype=np.float32)
    hum = (0.05 * np.sin(2 * np.pi * 50 * np.arange(3 * SR) / SR)).astype(np.float32)
    noise = (0.01 * rng.standard_normal(3 * SR)).astype(np.float32)
    wav = np.concatenate([silence, speech, hum, noise])
    t_speech_end = (3 * SR + len(speech)) / SR
    dets = [_det(2.5), _det(t_speech_end + 0.1), _det(t_speech_end + 2.9), _det(t_speech_end + 5.9)]
    probs = gate.judge(wav, dets)
    assert probs[1] > 0.8, probs                      # right after the words
    assert max(probs[0], probs[2], probs[3]) < 0.5, probs  # silence, mains hum, faint noise
    kept = gate.filter(wav, dets)
    assert [d["start"] for d in kept] == [dets[1]["start"]] and kept[0]["vad_speech_prob"] == pytest.approx(probs[1], abs=1e-3)


def test_gate_reads_a_window_offset_in_the_stream(gate, speech) -> None:
    """The same audio judged from a ring buffer whose first sample is 100 s into the stream."""
    wav = np.concatenate([np.zeros(SR, dtype=np.float32), speech])
    det = _det(100.0 + len(wav) / SR + 0.05)
    assert gate.judge(wav, [det], offset_s=100.0)[0] == pytest.approx(gate.judge(wav, [_det(det["start"] - 100.0)])[0])
    assert gate.judge(wav, [_det(50.0)], offset_s=100.0) == [0.0]  # before the buffer: no audio, no speech


def test_stream_ring_is_bounded_and_keeps_absolute_time() -> None:
    ring = StreamRing()
    pushed = 0
    for _ in range(30):
        piece = np.full(SR, pushed / SR, dtype=np.float32)
        ring.push(piece)
        pushed += len(piece)
    assert len(ring.samples) == int(RING_S * SR)
    assert ring.offset_s == pytest.approx((pushed - int(RING_S * SR)) / SR)
    assert ring.samples[0] == pytest.approx(ring.offset_s)
