"""Trigger-word evaluation: outcomes on constructed streams, DET sweep, val calibration applied
unchanged to test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from seqflow.audio.features import LogMel
from seqflow.evaluate.streams import ScoredStreams, concat_clips, count_outcomes, negative_seconds, score_clip_streams
from seqflow.evaluate.trigger_word import (Matching, calibrate, det_curve, measure, plot_det, sweep_points,
                                           sweep_thresholds)
from seqflow.models.trigger_word import TriggerWordNet
from seqflow.serve.detector import TriggerWordDetector

STEP, FIRST = 0.04, 0.14
MATCH = Matching(refractory_s=1.0, window_s=2.0, tolerance_s=0.5)


def test_concat_clips_offsets_segments() -> None:
    clips = [(np.zeros(16000, np.float32), [{"kind": "positive", "start": 0.2, "end": 0.7},
                                            {"kind": "negative", "start": 0.8, "end": 0.9, "confusable": True}]),
             (np.ones(8000, np.float32), []),
             (np.zeros(16000, np.float32), [{"kind": "positive", "start": 0.1, "end": 0.5},
                                            {"kind": "negative", "start": 0.6, "end": 0.7}])]
    stream, pos, conf, seconds = concat_clips(clips, 16000)
    assert stream.shape == (40000,) and stream[16000:24000].min() == 1.0
    np.testing.assert_allclose(pos, [[0.2, 0.7], [1.6, 2.0]])
    np.testing.assert_allclose(conf, [[0.8, 0.9]])  # only sound-alikes count as confusables
    assert seconds == pytest.approx(2.5)


def _stream(bumps: list[tuple[float, float]], positives: list[tuple[float, float]],
            confusables: list[tuple[float, float]] = (), seconds: float = 3600.0) -> ScoredStreams:
    n = int((seconds - FIRST) / STEP) + 1
    probs = np.full(n, 0.05, dtype=np.float32)
    for t, v in bumps:
        k = int(round((t - FIRST) / STEP))
        probs[k:k + 10] = v
    return ScoredStreams([probs], [np.asarray(positives, float).reshape(-1, 2)],
                         [np.asarray(confusables, float).reshape(-1, 2)], seconds, STEP, FIRST)


def _constructed() -> ScoredStreams:
    """One hour; 4 positives; two clear hits (0.9), one weak hit (0.4), one miss; false accepts:
    two at 0.6 (the first on a sound-alike) and one at 0.3."""
    return _stream([(100.1, 0.9), (200.2, 0.9), (300.3, 0.4), (1000.0, 0.6), (2000.0, 0.6), (3000.0, 0.3)],
                   [(99.5, 100.0), (199.5, 200.0), (299.5, 300.0), (399.5, 400.0)],
                   confusables=[(999.5, 999.9), (1500.0, 1500.5)])


def test_count_outcomes_each_positive_matched_once() -> None:
    s = _stream([(9.6, 0.9), (10.5, 0.9), (25.0, 0.9), (32.4, 0.9), (32.6 + 1.0, 0.9)],
                [(9.0, 10.0), (19.0, 20.0), (29.0, 30.0)], seconds=60.0)
    c = count_outcomes(s, 0.5, refractory_s=0.5, window_s=2.0, tolerance_s=0.5)
    # 9.6 hits 10 (tolerance); 10.5 → 10 already matched → FA; 25 → FA; 32.4 hits 30; 33.6 → FA
    assert (c["positives"], c["hits"], c["false_accepts"]) == (3, 2, 3)


def test_negative_seconds_counts_overlapping_hit_regions_once() -> None:
    s = _stream([], [(10.0, 11.0), (12.0, 12.5)], seconds=100.0)
    # regions [9.5, 13.5] and [11.5, 15.0] → union [9.5, 15.0] = 5.5 s
    assert negative_seconds(s, 2.0, 0.5) == pytest.approx(94.5)


def test_det_curve_exact_frr_and_fa_per_hour() -> None:
    s = _constructed()
    curve = det_curve(s, MATCH, thresholds=[0.2, 0.35, 0.5, 0.7, 0.95])
    all_h = (3600.0 - 4 * 3.5) / 3600.0
    neg_h = (3600.0 - 4 * 3.5 - (1002.4 - 999.5) - (1503.0 - 1500.0)) / 3600.0  # minus sound-alike regions
    assert curve["frr"] == [0.25, 0.25, 0.5, 0.5, 1.0]
    # the 0.6 bump at 1000 s lies on a sound-alike: a sound-alike trigger, not a false accept per hour
    np.testing.assert_allclose(curve["fa_per_hour"], np.array([2.0, 1.0, 1.0, 0.0, 0.0]) / neg_h)
    np.testing.assert_allclose(curve["fa_per_hour_all"], np.array([3.0, 2.0, 2.0, 0.0, 0.0]) / all_h)
    assert curve["confusable_trigger_rate"] == [0.5, 0.5, 0.5, 0.0, 0.0]
    assert sweep_points(curve, [0.5, 2.5]) == {"test/frr_at_0.5fah": 0.5, "test/frr_at_2.5fah": 0.25}
    assert len(sweep_thresholds(99)) == 99 + 40 and sweep_thresholds(99)[-1] == pytest.approx(0.999999)


def test_measure_counts_beside_rates_and_confusables() -> None:
    m = measure(_constructed(), 0.5, MATCH)
    assert m["test/num_positives"] == 4 and m["test/num_missed"] == 2 and m["test/frr"] == 0.5
    assert m["test/num_false_accepts"] == 2 and m["test/num_confusable_false_accepts"] == 1
    assert m["test/num_confusables"] == 2 and m["test/num_confusable_triggers"] == 1
    assert m["test/confusable_trigger_rate"] == 0.5 and m["test/threshold"] == 0.5


def test_val_threshold_is_applied_unchanged_to_test() -> None:
    """A val stream whose lowest threshold at <= 0.5 FA/h is 0.65; the test stream alone would
    pick 0.35 (its own curve is clean there). Test must be measured at 0.65."""
    val = _stream([(100.1, 0.9), (1000.0, 0.6), (2000.0, 0.3)], [(99.5, 100.0)])
    test = _stream([(100.1, 0.9), (200.2, 0.5)], [(99.5, 100.0), (199.5, 200.0)])
    ths = [0.2, 0.35, 0.5, 0.65, 0.8]
    cal = calibrate(det_curve(val, MATCH, ths), target_fa_per_hour=0.5)
    assert cal.met and cal.threshold == 0.65 and cal.frr == 0.0
    assert calibrate(det_curve(test, MATCH, ths), 0.5).threshold == 0.2  # what test alone would choose
    m = measure(test, cal.threshold, MATCH)
    assert m["test/threshold"] == 0.65 and m["test/frr"] == 0.5  # the 0.5 bump is missed at 0.65


def test_calibration_holds_the_sound_alike_rate_too() -> None:
    curve = det_curve(_constructed(), MATCH, thresholds=[0.2, 0.35, 0.5, 0.7, 0.95])
    assert calibrate(curve, 1.5).threshold == 0.35  # FA/h alone: 1 false accept off sound-alikes
    cal = calibrate(curve, 1.5, max_confusable_trigger_rate=0.25)  # the sound-alike fires up to 0.5
    assert cal.met and cal.threshold == 0.7 and cal.confusable_trigger_rate == 0.0
    unmet = calibrate({"thresholds": [0.5, 0.9], "frr": [0.1, 0.3], "fa_per_hour": [0.0, 0.0],
                       "confusable_trigger_rate": [0.5, 0.2]}, 0.5, max_confusable_trigger_rate=0.1)
    assert not unmet.met and unmet.threshold == 0.9


def test_calibration_unmet_uses_closest_and_says_so() -> None:
    curve = {"thresholds": [0.5, 0.9], "frr": [0.1, 0.3], "fa_per_hour": [9.0, 3.0]}
    cal = calibrate(curve, 0.5)
    assert not cal.met and cal.threshold == 0.9 and cal.fa_per_hour == 3.0


def test_scored_clip_streams_end_to_end(tmp_path: Path) -> None:
    torch.manual_seed(0)
    det = TriggerWordDetector(TriggerWordNet(40, conv_channels=16, gru_hidden=8), LogMel())
    rng = np.random.default_rng(0)
    clips = [((0.05 * rng.standard_normal(16000 * 3)).astype(np.float32),
              [{"kind": "positive", "start": 1.0, "end": 1.5}]) for _ in range(4)]
    scored = score_clip_streams(det, clips, num_streams=2)
    assert scored.num_positives == 4 and scored.seconds == pytest.approx(12.0)
    curve = det_curve(scored, MATCH, thresholds=9)
    assert len(curve["frr"]) == 9 + 41 and all(0.0 <= r <= 1.0 for r in curve["frr"])
    png = plot_det(curve, tmp_path / "plots" / "det.png", operating_point=(0.0, 0.5))
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_real_audio_curves_hold_the_threshold_up() -> None:
    """Dev-half real speech (no phrase in it) fires at 0.6 twice in one hour: the val stream alone
    would allow 0.35, the real-audio curve forces the threshold above 0.6."""
    ths = [0.2, 0.35, 0.5, 0.7, 0.95]
    val = _stream([(100.1, 0.9), (200.2, 0.9), (2000.0, 0.3)], [(99.5, 100.0), (199.5, 200.0)])
    real = _stream([(500.0, 0.6), (1500.0, 0.6)], [])
    fah = det_curve(real, MATCH, ths)["fa_per_hour"]  # no positives: every detection is a false accept
    assert fah == [2.0, 2.0, 2.0, 0.0, 0.0]
    curve = det_curve(val, MATCH, ths)
    assert calibrate(curve, 0.5).threshold == 0.35
    cal = calibrate(curve, 0.5, fa_curves={"real_speech": fah})
    assert cal.met and cal.threshold == 0.7 and cal.frr == 0.0
    with pytest.raises(ValueError, match="one value per threshold"):
        calibrate(curve, 0.5, fa_curves={"real_speech": fah[:2]})
