"""Label math: seconds -> model output steps at the detector's own step geometry."""

import numpy as np
import pytest
import torch

from seqflow.audio.features import LogMel
from seqflow.models.trigger_word import StepGeometry, TriggerWordNet, output_steps
from seqflow.shards.labels import (batch_labels, first_step_after, frame_labels, label_window_steps, step_seconds,
                                   step_to_seconds)

SR, HOP, K, S = 16000, 160, 15, 4
GEOM = dict(sample_rate=SR, hop_length=HOP, conv_kernel=K, conv_stride=S)
G = StepGeometry(K, S)


def _labels(ends, n, steps, geometry=G):
    return frame_labels(ends, n, SR, HOP, geometry, steps)


def _old_shard_time_labels(ends, num_samples, label_steps, k=K, s=S):
    """The labels the shard stage stored before (seqflow <= layout 2), written out by hand."""
    ty = max(0, (1 + num_samples // HOP - k) // s + 1)
    out = np.zeros(ty, dtype=np.uint8)
    for e in ends:
        need = 1 + int(round(e * SR, 6)) // HOP - (k - 1)
        first = max(0, -(-need // s))
        if first < ty:
            out[first:min(ty, first + label_steps)] = 1
    return out


def test_positive_ending_at_2s_labels_the_50_steps_right_after():
    labels = _labels([2.0], 10 * SR, label_window_steps(2.0, G, SR, HOP))
    assert labels.dtype == np.uint8 and labels.shape == (247,)
    # end frame = 1 + 32000 // 160 = 201; first step whose field ends (k*4 + 14) >= 201 is 47
    assert labels[46] == 0 and labels[47] == 1
    assert labels.sum() == 50 and labels[47:97].all() and labels[97] == 0


def test_labels_equal_the_old_shard_time_labels_for_the_default_geometry():
    rng = np.random.default_rng(3)
    for _ in range(200):
        n = int(rng.integers(SR // 2, 12 * SR))
        ends = sorted(rng.uniform(0, n / SR + 0.5, int(rng.integers(0, 5))).tolist())
        assert np.array_equal(_labels(ends, n, 50), _old_shard_time_labels(ends, n, 50))
    # the padded batch form gives the same rows (padding steps past a clip's end aside)
    ends = [[2.0], [], [0.31, 7.5]]
    lab = batch_labels(ends, 10 * SR, SR, HOP, TriggerWordNet(n_mels=8), 2.0)
    assert lab.dtype == np.float32 and lab.shape == (3, 247)
    for row, e in zip(lab, ends):
        assert np.array_equal(row, _old_shard_time_labels(e, 10 * SR, 50))


def test_first_step_is_the_minimal_step_reaching_the_end_frame():
    rng = np.random.default_rng(0)
    for end in rng.uniform(0, 10, 200):
        k = G.seconds_to_step(end, SR, HOP)
        assert k == first_step_after(end, **GEOM)
        end_frame = 1 + int(round(end * SR, 6)) // HOP
        assert k * S + K - 1 >= end_frame
        assert k == 0 or (k - 1) * S + K - 1 < end_frame
        # inverse: step k's field ends after the positive, step k-1's does not reach past its end frame
        assert step_to_seconds(k, **GEOM) >= end
        assert k == 0 or step_to_seconds(k - 1, **GEOM) < end_frame * HOP / SR


def test_labels_clip_at_the_end_and_union_overlapping_windows():
    labels = _labels([9.5], 10 * SR, 50)
    k = G.seconds_to_step(9.5, SR, HOP)
    assert k == 235 and labels.sum() == 247 - 235 and labels[-1] == 1
    assert _labels([10.5], 10 * SR, 50).sum() == 0  # ends after the clip
    assert _labels([0.0], 10 * SR, 5)[:6].tolist() == [1, 1, 1, 1, 1, 0]
    both = _labels([2.0, 2.4], 10 * SR, 50)
    assert both.sum() == 60 and both[47:107].all()
    assert _labels([], 10 * SR, 50).sum() == 0


@pytest.mark.parametrize("stride", [2, 4, 8])
def test_other_stride_keeps_the_label_window_in_seconds(stride):
    """A net with another conv stride labels the same 2 s after the word, from the same segments."""
    g = StepGeometry(K, stride)
    steps = label_window_steps(2.0, g, SR, HOP)
    assert steps == {2: 100, 4: 50, 8: 25}[stride]
    labels = _labels([3.0], 10 * SR, steps, g)
    on = np.flatnonzero(labels)
    assert len(labels) == output_steps(10 * SR, HOP, K, stride) and on.size == steps
    first, last = g.step_to_seconds(on[0], SR, HOP), g.step_to_seconds(on[-1], SR, HOP)
    assert 3.0 <= first < 3.0 + HOP / SR + g.step_seconds(SR, HOP)  # frame after the end, then a step
    assert last - first + g.step_seconds(SR, HOP) == pytest.approx(2.0)
    assert np.array_equal(labels, _old_shard_time_labels([3.0], 10 * SR, steps, s=stride))


def test_label_length_matches_logmel_and_conv_output():
    """Ty must equal what a real log-mel + unpadded Conv1D produces for the clip."""
    for seconds in (1.0, 3.37, 10.0):
        n = int(seconds * SR)
        feats, _ = LogMel(sample_rate=SR, hop_length=HOP)(torch.zeros(1, n))
        conv = torch.nn.Conv1d(feats.shape[-1], 1, K, stride=S)
        ty = conv(feats.transpose(1, 2)).shape[-1]
        assert ty == output_steps(n, HOP, K, S) == len(_labels([0.5], n, 3))


def test_step_to_seconds_vectorised_and_step_duration():
    ks = np.arange(3)
    assert np.allclose(step_to_seconds(ks, **GEOM), [(14) * 0.01, 18 * 0.01, 22 * 0.01])
    assert np.allclose(G.step_to_seconds(ks, SR, HOP), step_to_seconds(ks, **GEOM))
    assert step_seconds(SR, HOP, S) == pytest.approx(0.04) == G.step_seconds(SR, HOP)
