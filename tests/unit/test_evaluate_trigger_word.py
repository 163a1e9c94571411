"""Trigger-word evaluation: stream assembly, hit/false-accept matching, FRR and FA/h, DET plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from seqflow.audio.features import LogMel
from seqflow.evaluate.trigger_word import (concat_clips, count_errors, det_curve, evaluate_trigger_word,
                                           plot_det, summarize)
from seqflow.models.trigger_word import TriggerWordNet
from seqflow.serve.detector import TriggerWordDetector

STEP, FIRST = 0.04, 0.14


def test_concat_clips_offsets_positive_ends() -> None:
    clips = [(np.zeros(16000, np.float32), [{"kind": "positive", "start": 0.2, "end": 0.7},
                                            {"kind": "negative", "start": 0.8, "end": 0.9}]),
             (np.ones(8000, np.float32), []),
             (np.zeros(16000, np.float32), [{"kind": "positive", "start": 0.1, "end": 0.5}])]
    stream, ends, seconds = concat_clips(clips, 16000)
    assert stream.shape == (40000,) and stream[16000:24000].min() == 1.0
    np.testing.assert_allclose(ends, [0.7, 1.5 + 0.5])
    assert seconds == pytest.approx(2.5)


def test_count_errors_each_positive_matched_once() -> None:
    ends = np.array([10.0, 20.0, 30.0])
    dets = [{"start": 9.6}, {"start": 10.5}, {"start": 25.0}, {"start": 32.4}, {"start": 32.6}]
    # 9.6 hits 10 (tolerance); 10.5 → 10 already matched → FA; 25 → FA;
    # 32.4 hits 30 (window 2 + tolerance 0.5); 32.6 → FA
    assert count_errors(dets, ends, window_s=2.0, tolerance_s=0.5) == (2, 3)


def _constructed() -> tuple[np.ndarray, np.ndarray, float]:
    """One hour of steps; 4 positives; scores: two clear hits (0.9), one weak hit (0.4), one miss,
    false accepts: two at 0.6 and one at 0.3."""
    seconds = 3600.0
    n = int((seconds - FIRST) / STEP) + 1
    probs = np.full(n, 0.05)
    ends = np.array([100.0, 200.0, 300.0, 400.0])

    def bump(t: float, v: float) -> None:
        k = int(round((t - FIRST) / STEP))
        probs[k:k + 10] = v

    bump(100.1, 0.9), bump(200.2, 0.9), bump(300.3, 0.4)  # positive 400 missed
    bump(1000.0, 0.6), bump(2000.0, 0.6), bump(3000.0, 0.3)
    return probs, ends, seconds


def test_det_curve_exact_frr_and_fa_per_hour() -> None:
    probs, ends, seconds = _constructed()
    curve = det_curve(probs, STEP, FIRST, ends, seconds, thresholds=[0.2, 0.35, 0.5, 0.7, 0.95],
                      refractory_s=1.0, match_tolerance_s=0.5, label_steps=50)
    assert curve["thresholds"] == [0.2, 0.35, 0.5, 0.7, 0.95]
    assert curve["frr"] == [0.25, 0.25, 0.5, 0.5, 1.0]
    assert curve["fa_per_hour"] == [3.0, 2.0, 2.0, 0.0, 0.0]
    m = summarize(curve, [0.5, 1.0])
    assert m == {"test/frr_at_0.5fah": 0.5, "test/frr_at_1fah": 0.5, "test/threshold": 0.7,
                 "test/fa_per_hour": 0.0}
    m = summarize(curve, [0.5, 3.0], operating_fa_per_hour=2.0)
    assert m["test/frr_at_3fah"] == 0.25 and m["test/threshold"] == 0.35 and m["test/fa_per_hour"] == 2.0


def test_det_curve_threshold_count_and_unreachable_target() -> None:
    probs, ends, seconds = _constructed()
    curve = det_curve(probs, STEP, FIRST, ends, seconds, thresholds=99)
    assert len(curve["thresholds"]) == 99 + 20  # 0.99 is in both the even grid and the tail
    assert curve["thresholds"][-1] == pytest.approx(0.9999)
    assert curve["thresholds"][0] == pytest.approx(0.01) and 0.99 in curve["thresholds"]
    # a curve that never gets below 1 FA/h → FRR 1.0 at threshold 1.0 (nothing fires)
    m = summarize({"thresholds": [0.5], "frr": [0.0], "fa_per_hour": [5.0]}, [1.0])
    assert m == {"test/frr_at_1fah": 1.0, "test/threshold": 1.0, "test/fa_per_hour": 0.0}


def test_evaluate_trigger_word_end_to_end(tmp_path: Path) -> None:
    torch.manual_seed(0)
    det = TriggerWordDetector(TriggerWordNet(40, conv_channels=16, gru_hidden=8), LogMel())
    rng = np.random.default_rng(0)
    clips = [((0.05 * rng.standard_normal(16000 * 3)).astype(np.float32),
              [{"kind": "positive", "start": 1.0, "end": 1.5}]) for _ in range(4)]
    out = evaluate_trigger_word(det, clips, thresholds=9, fa_per_hour_targets=[0.5, 1.0])
    assert out["test/num_positives"] == 4.0 and out["test/hours"] == pytest.approx(12 / 3600)
    assert {"test/frr_at_0.5fah", "test/frr_at_1fah", "test/threshold", "test/fa_per_hour"} <= set(out)
    assert len(out["curve"]["frr"]) == 9 + 21 and all(0.0 <= r <= 1.0 for r in out["curve"]["frr"])
    png = plot_det(out["curve"], tmp_path / "plots" / "det.png",
                   operating_point=(out["test/fa_per_hour"], out["test/frr_at_1fah"]))
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
