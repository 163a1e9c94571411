"""TriggerWordNet: output frame rate, streaming state, causality, config wiring."""

from __future__ import annotations

import pytest
import torch

from seqflow.audio.features import LogMel
from seqflow.config import load_config
from seqflow.models.trigger_word import TriggerWordNet, output_steps


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
