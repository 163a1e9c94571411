"""Streaming detection (``detector.stream()``) equals offline scoring on real (TTS) speech in noise,
whatever the push sizes, for both trigger-word detector classes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seqflow.audio.features import LogMel
from seqflow.audio.resample import resample
from seqflow.data.tts import EspeakTTS
from seqflow.models.speech_embedding import EmbeddingTriggerNet, SpeechEmbeddingFrontEnd
from seqflow.models.trigger_word import TriggerWordNet
from seqflow.serve.detector import TriggerWordDetector, detect
from seqflow.serve.embedding_detector import EmbeddingTriggerWordDetector

SR = 16000
WORDS = ["activate", "hello", "captivate", "turn on the lights", "activate", "seven", "motivate", "activity"]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny per-step convolutions run best on one thread (the CI box is shared)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """~30 s of espeak words at random places in noise, 16 kHz."""
    tts, rng = EspeakTTS(), np.random.default_rng(3)
    out = (0.005 * rng.standard_normal(30 * SR)).astype(np.float32)
    for i, word in enumerate(WORDS):
        wav, sr = tts.render(word, voice=["en-us+f3", "en-gb+m3"][i % 2])
        wav = resample(wav, sr, SR)
        at = int((1.0 + 3.5 * i + rng.uniform(0, 1.0)) * SR)
        out[at:at + len(wav)] += 0.5 * wav
    return out


def _randomised(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    with torch.no_grad():  # non-trivial BatchNorm statistics, as after training
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    return net.eval()


def _logmel_detector() -> TriggerWordDetector:
    torch.manual_seed(0)
    net = TriggerWordNet(n_mels=40, conv_channels=24, gru_hidden=16)
    return TriggerWordDetector(_randomised(net, 0), LogMel(), refractory_s=1.0, chunk_s=4.0)


def _embedding_detector() -> EmbeddingTriggerWordDetector:
    torch.manual_seed(1)
    net = EmbeddingTriggerNet(gru_hidden=16)
    return EmbeddingTriggerWordDetector(_randomised(net, 1), SpeechEmbeddingFrontEnd(), refractory_s=1.0,
                                        chunk_s=4.0)


@pytest.mark.parametrize("make", [_logmel_detector, _embedding_detector], ids=["logmel", "embedding"])
def test_stream_in_random_pieces_equals_offline(speech, make) -> None:
    det = make()
    probs, _ = det.scores(speech)
    threshold = float(np.quantile(probs, 0.85))
    offline = detect(probs, det.step_s, threshold, det.refractory_s, det.first_step_end_s)
    assert len(offline) >= 2  # the threshold makes detections (and the refractory rule bites below)
    assert len(detect(probs, det.step_s, threshold, 0.0, det.first_step_end_s)) >= len(offline)

    rng = np.random.default_rng(7)
    stream = det.stream(threshold=threshold)
    got_probs, emitted, completed, i = [], [], [], 0
    # memory bound: after each push only the next step's context remains (< its receptive field)
    context = (det.conv_kernel + det.conv_stride) * det.hop_length + det.logmel.n_fft
    while i < len(speech):
        n = int(rng.choice([0, 1, 320, 320, 1600, 7000, 24000]))
        p, dets = stream.step(speech[i:i + n])
        i += n
        got_probs.append(p)
        for d in dets:  # low latency: reported by the push that completed its step
            assert stream.seconds - d["start"] <= n / SR + 0.016 + 1e-6
            assert d["end"] >= d["start"] and d["score"] >= threshold
        emitted += dets
        completed += stream.pop_completed()
        assert stream.buffered_samples <= context
    p, dets = stream.flush_step()
    got_probs.append(p)
    emitted += dets
    completed += stream.pop_completed()
    got = np.concatenate(got_probs)

    assert stream.seconds == pytest.approx(len(speech) / SR)
    assert got.shape == probs.shape and stream.steps == len(probs)
    np.testing.assert_allclose(got, probs, atol=2e-5)
    assert [round(d["start"], 6) for d in emitted] == [round(d["start"], 6) for d in offline]
    for e, o in zip(emitted, offline):  # streamed end/score: as far as seen when emitted
        assert e["end"] <= o["end"] + 1e-9 and e["score"] <= o["score"] + 1e-6
    assert len(completed) == len(offline)  # pop_completed gives offline detect()'s detections
    for c, o in zip(completed, offline):
        assert c == pytest.approx(o, abs=1e-5)


def test_stream_rejects_bad_input_and_push_after_flush() -> None:
    stream = _logmel_detector().stream()
    assert stream.push(np.zeros(0, np.float32)) == [] and stream.seconds == 0.0
    with pytest.raises(ValueError, match="mono"):
        stream.push(np.zeros((2, 10), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        stream.push(np.array([0.0, np.nan], np.float32))
    stream.flush()
    with pytest.raises(ValueError, match="flushed"):
        stream.push(np.zeros(10, np.float32))
