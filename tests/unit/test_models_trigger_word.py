"""TriggerWordNet: output frame rate, streaming state, causality, config wiring."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seqflow.audio.features import LogMel
from seqflow.config import load_config
from seqflow.models.trigger_word import StepGeometry, TriggerWordNet, output_steps


@pytest.fixture(scope="module")
def net() -> TriggerWordNet:
    torch.manual_seed(0)
    return TriggerWordNet(n_mels=40, conv_channels=24, gru_hidden=16).eval()


@pytest.mark.parametrize("num_samples", [2240, 2399, 2400, 16000, 16000 * 10, 16000 * 10 + 159, 33333])
def test_output_length_matches_output_steps(net: TriggerWordNet, num_samples: int) -> None:
    feats, _ = LogMel()(torch.randn(2, num_samples))
    logits, h = net(feats)
    assert logits.shape == (2, output_steps(num_samples, 160, 15, 4))
    assert h.shape == (2, 2, 16)


def test_ten_second_clip_has_247_steps() -> None:
    assert output_steps(160_000, 160, 15, 4) == 247


def test_carried_state_equals_single_pass(net: TriggerWordNet) -> None:
    feats = torch.randn(1, 15 + 4 * 99, 40)  # exactly 100 steps
    whole, h_whole = net(feats)
    # first 40 steps use frames [0, 4*39+15); the rest start at frame 4*40
    a, h = net(feats[:, : 4 * 39 + 15])
    b, h2 = net(feats[:, 4 * 40:], h)
    torch.testing.assert_close(torch.cat([a, b], 1), whole, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(h2, h_whole, atol=1e-6, rtol=1e-5)


def test_causal_in_eval(net: TriggerWordNet) -> None:
    feats = torch.randn(1, 400, 40)
    changed = feats.clone()
    changed[:, 200:] += 5.0  # frames from 200 on: steps whose receptive field ends before 200 must not move
    a, _ = net(feats)
    b, _ = net(changed)
    last_unaffected = (200 - 15) // 4  # step k covers frames 4k .. 4k+14
    torch.testing.assert_close(a[:, : last_unaffected + 1], b[:, : last_unaffected + 1])
    assert not torch.allclose(a[:, last_unaffected + 1:], b[:, last_unaffected + 1:])


def test_builds_from_default_config() -> None:
    cfg = load_config()
    net = TriggerWordNet(n_mels=cfg.model.features.n_mels, **cfg.model.net)
    assert net.conv.out_channels == 196 and net.conv_kernel == 15 and net.conv_stride == 4
    assert len(net.grus) == 2 and net.grus[0].hidden_size == 128
    assert not net.grus[0].bidirectional  # streams


@pytest.mark.parametrize("stride", [2, 4])
def test_net_owns_its_step_geometry(stride: int) -> None:
    """num_steps / steps_for_samples / step<->seconds come from one formula, on ints, arrays and tensors."""
    net = TriggerWordNet(n_mels=40, conv_channels=8, gru_hidden=8, conv_stride=stride).eval()
    assert isinstance(net, StepGeometry)
    for n in (2240, 16000, 33333):
        feats, frames = LogMel()(torch.randn(1, n))
        logits, _ = net(feats)
        assert logits.shape[1] == net.num_steps(feats.shape[1]) == net.steps_for_samples(n, 160)
        assert net.steps_for_samples(n, 160) == output_steps(n, 160, 15, stride)
        assert int(net.num_steps(frames)[0]) == logits.shape[1]  # tensor form (the training mask)
    assert net.num_steps(10) == 0 and net.num_steps(torch.tensor([10, 15])).tolist() == [0, 1]
    assert net.num_steps(np.array([10, 19])).tolist() == [0, 3 if stride == 2 else 2]
    assert net.step_seconds(16000, 160) == pytest.approx(stride * 0.01)
    for t in (0.0, 0.5, 2.0, 7.345):
        k = net.seconds_to_step(t, 16000, 160)
        assert net.step_to_seconds(k, 16000, 160) >= t  # the step has heard the word's end
        assert k == 0 or net.step_end_frame(k - 1) < 1 + int(t * 16000) // 160
