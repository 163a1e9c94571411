"""Trigger-word detection: rising edges + refractory period, exact chunked scoring, save/load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from seqflow.audio.features import LogMel
from seqflow.errors import SeqflowError
from seqflow.models.trigger_word import TriggerWordNet, output_steps
from seqflow.serve.detector import TriggerWordDetector, detect, load_detector, save_detector
from seqflow.shards.labels import step_to_seconds

MODEL_CFG = {"features": {"sample_rate": 16000, "n_fft": 512, "win_length": 400, "hop_length": 160, "n_mels": 40},
             "net": {"conv_channels": 24, "conv_kernel": 15, "conv_stride": 4, "gru_hidden": 16, "gru_layers": 2,
                     "dropout": 0.2}}


def _net(seed: int = 0) -> TriggerWordNet:
    torch.manual_seed(seed)
    net = TriggerWordNet(n_mels=40, **MODEL_CFG["net"])
    with torch.no_grad():  # non-trivial BatchNorm statistics, as after training
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    return net.eval()


def _noise(seconds: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal(int(seconds * 16000) + 77)).astype(np.float32)


def test_detect_times_scores_and_refractory() -> None:
    p = np.zeros(100)
    p[10:13] = [0.6, 0.9, 0.7]   # run 1: steps 10-12
    p[15:17] = 0.8                # within refractory of run 1 → ignored
    p[40:45] = 0.55               # run 2
    p[97:] = 0.95                 # run 3, never falls
    dets = detect(p, step_s=0.04, threshold=0.5, refractory_s=1.0, first_step_end_s=0.14)
    assert [round(d["start"], 6) for d in dets] == [round(0.14 + 10 * 0.04, 6), round(0.14 + 40 * 0.04, 6),
                                                    round(0.14 + 97 * 0.04, 6)]
    assert dets[0]["end"] == pytest.approx(0.14 + 13 * 0.04) and dets[0]["score"] == pytest.approx(0.9)
    assert dets[1]["end"] == pytest.approx(0.14 + 45 * 0.04) and dets[1]["score"] == pytest.approx(0.55)
    assert dets[2]["end"] == pytest.approx(0.14 + 99 * 0.04)
    # without the refractory period the second run counts too
    assert len(detect(p, 0.04, 0.5, 0.0, 0.14)) == 4
    # threshold is inclusive; nothing above it → nothing
    assert len(detect(p, 0.04, 0.95, 1.0)) == 1 and detect(p, 0.04, 0.96, 1.0) == []
    assert detect(np.zeros(0), 0.04, 0.5, 1.0) == []


def test_detect_starts_at_step_zero_when_high_from_the_start() -> None:
    dets = detect(np.array([0.9, 0.9, 0.1, 0.1]), 0.04, 0.5, 1.0, 0.14)
    assert len(dets) == 1 and dets[0]["start"] == pytest.approx(0.14) and dets[0]["end"] == pytest.approx(0.22)


@pytest.mark.parametrize("chunk_s", [0.5, 1.04, 3.0, 60.0])
def test_chunked_scores_equal_whole_stream(chunk_s: float) -> None:
    net, logmel = _net(), LogMel()
    wav = _noise(7.3)
    det = TriggerWordDetector(net, logmel, chunk_s=chunk_s)
    probs, times = det.scores(wav)
    with torch.no_grad():
        feats, _ = logmel(torch.from_numpy(wav)[None])
        whole = torch.sigmoid(net(feats)[0][0]).numpy()
    assert probs.shape == whole.shape == (output_steps(wav.size, 160, 15, 4),)
    np.testing.assert_allclose(probs, whole, atol=2e-6)
    assert times[0] == pytest.approx(14 * 160 / 16000) and np.diff(times) == pytest.approx(0.04)
    np.testing.assert_allclose(times, step_to_seconds(np.arange(probs.size), 16000, 160, 15, 4))


def test_short_audio_gives_no_steps() -> None:
    det = TriggerWordDetector(_net(), LogMel())
    probs, times = det.scores(np.zeros(1000, dtype=np.float32))
    assert probs.shape == times.shape == (0,)
    assert det.detect(np.zeros(1000, dtype=np.float32)) == []


def test_save_load_round_trip(tmp_path: Path) -> None:
    net = _net(3)
    save_detector(tmp_path / "det", net, MODEL_CFG, threshold=0.7, refractory_s=0.8)
    meta = json.loads((tmp_path / "det" / "detector.json").read_text())
    assert meta["threshold"] == 0.7 and meta["refractory_s"] == 0.8 and meta["net"] == MODEL_CFG["net"]
    loaded = load_detector(tmp_path / "det")
    assert loaded.threshold == 0.7 and loaded.refractory_s == 0.8 and loaded.step_s == pytest.approx(0.04)
    wav = _noise(4.0, seed=5)
    a, _ = TriggerWordDetector(net, LogMel()).scores(wav)
    b, _ = loaded.scores(wav)
    np.testing.assert_array_equal(a, b)
    # detection uses the saved threshold unless one is given
    assert loaded.detect(wav) == detect(b, 0.04, 0.7, 0.8, loaded.first_step_end_s)
    assert loaded.detect(wav, threshold=0.0)[0]["start"] == pytest.approx(loaded.first_step_end_s)


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(SeqflowError, match="detector.json"):
        load_detector(tmp_path)
    save_detector(tmp_path, _net(), MODEL_CFG, 0.5, 1.0)
    (tmp_path / "weights.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SeqflowError, match="weights.pt"):
        load_detector(tmp_path)


def test_scores_many_matches_one_by_one() -> None:
    torch.manual_seed(0)
    net = TriggerWordNet(n_mels=40).eval()
    det = TriggerWordDetector(net, LogMel(), chunk_s=3.0)
    rng = np.random.default_rng(0)
    wavs = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (16000 * 7, 16000 * 4 + 123, 16000 * 9)]
    batched = det.scores_many(wavs)
    for w, p in zip(wavs, batched):
        single, _ = det.scores(w)
        assert p.shape == single.shape
        # zero-padding a shorter stream may only touch its last steps' STFT edge
        np.testing.assert_allclose(p[:-2], single[:-2], atol=1e-5)
