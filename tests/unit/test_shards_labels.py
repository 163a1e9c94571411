"""Label math: seconds -> model output steps at the detector's real frame rate."""

import numpy as np
import pytest
import torch

from seqflow.audio.features import LogMel
from seqflow.models.trigger_word import output_steps
from seqflow.shards.labels import first_step_after, frame_labels, step_seconds, step_to_seconds

SR, HOP, K, S = 16000, 160, 15, 4
GEOM = dict(sample_rate=SR, hop_length=HOP, conv_kernel=K, conv_stride=S)


def test_positive_ending_at_2s_labels_the_50_steps_right_after():
    labels = frame_labels([2.0], 10 * SR, label_steps=50, **GEOM)
    assert labels.dtype == np.uint8 and labels.shape == (247,)
    # end frame = 1 + 32000 // 160 = 201; first step whose field ends (k*4 + 14) >= 201 is 47
    assert labels[46] == 0 and labels[47] == 1
    assert labels.sum() == 50 and labels[47:97].all() and labels[97] == 0


def test_first_step_is_the_minimal_step_reaching_the_end_frame():
    rng = np.random.default_rng(0)
    for end in rng.uniform(0, 10, 200):
        k = first_step_after(end, **GEOM)
        end_frame = 1 + int(round(end * SR, 6)) // HOP
        assert k * S + K - 1 >= end_frame
        assert k == 0 or (k - 1) * S + K - 1 < end_frame
        # inverse: step k's field ends after the positive, step k-1's does not reach past its end frame
        assert step_to_seconds(k, **GEOM) >= end
        assert k == 0 or step_to_seconds(k - 1, **GEOM) < end_frame * HOP / SR


def test_labels_clip_at_the_end_and_union_overlapping_windows():
    labels = frame_labels([9.5], 10 * SR, label_steps=50, **GEOM)
    k = first_step_after(9.5, **GEOM)
    assert k == 235 and labels.sum() == 247 - 235 and labels[-1] == 1
    assert frame_labels([10.5], 10 * SR, label_steps=50, **GEOM).sum() == 0  # ends after the clip
    assert frame_labels([0.0], 10 * SR, label_steps=5, **GEOM)[:6].tolist() == [1, 1, 1, 1, 1, 0]
    both = frame_labels([2.0, 2.4], 10 * SR, label_steps=50, **GEOM)
    assert both.sum() == 60 and both[47:107].all()
    assert frame_labels([], 10 * SR, label_steps=50, **GEOM).sum() == 0


def test_label_length_matches_logmel_and_conv_output():
    """Ty must equal what a real log-mel + unpadded Conv1D produces for the clip."""
    for seconds in (1.0, 3.37, 10.0):
        n = int(seconds * SR)
        feats, _ = LogMel(sample_rate=SR, hop_length=HOP)(torch.zeros(1, n))
        conv = torch.nn.Conv1d(feats.shape[-1], 1, K, stride=S)
        ty = conv(feats.transpose(1, 2)).shape[-1]
        assert ty == output_steps(n, HOP, K, S) == len(frame_labels([0.5], n, label_steps=3, **GEOM))


def test_step_to_seconds_vectorised_and_step_duration():
    ks = np.arange(3)
    assert np.allclose(step_to_seconds(ks, **GEOM), [(14) * 0.01, 18 * 0.01, 22 * 0.01])
    assert step_seconds(SR, HOP, S) == pytest.approx(0.04)
