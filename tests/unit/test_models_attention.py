"""Multi-head attention against a float64 reference, masks, and sinusoidal positional-encoding values."""

from __future__ import annotations

import math

import pytest
import torch

from seqflow.models.attention import MultiHeadAttention, attention_mask
from seqflow.models.positional import SinusoidalPositionalEncoding, sinusoid_table


def reference_mha(mha: MultiHeadAttention, query, key, value, allowed) -> torch.Tensor:
    """softmax(Q Kᵀ / √d_k) V per head by hand (float64), same projection weights, ``allowed (B, Tq, Tk)``."""
    B, Tq, D = query.shape
    Tk = key.shape[1]
    h, d_k = mha.num_heads, mha.d_k
    Q = (query @ mha.W_q.weight.T + mha.W_q.bias).view(B, Tq, h, d_k).transpose(1, 2)
    K = (key @ mha.W_k.weight.T + mha.W_k.bias).view(B, Tk, h, d_k).transpose(1, 2)
    V = (value @ mha.W_v.weight.T + mha.W_v.bias).view(B, Tk, h, d_k).transpose(1, 2)
    scores = Q @ K.transpose(-2, -1) / math.sqrt(d_k)                   # (B, h, Tq, Tk)
    scores = scores.masked_fill(~allowed[:, None], float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    heads = weights @ V                                                  # (B, h, Tq, d_k)
    return heads.transpose(1, 2).reshape(B, Tq, D) @ mha.W_o.weight.T + mha.W_o.bias


@pytest.fixture()
def mha() -> MultiHeadAttention:
    torch.manual_seed(0)
    return MultiHeadAttention(d_model=16, num_heads=4).double().eval()


def test_names_follow_the_course(mha: MultiHeadAttention) -> None:
    assert mha.num_heads == 4 and mha.d_k == 4
    for name in ("W_q", "W_k", "W_v", "W_o"):
        assert getattr(mha, name).weight.shape == (16, 16)


def test_cross_attention_with_padding_matches_reference(mha: MultiHeadAttention) -> None:
    torch.manual_seed(1)
    q, k, v = torch.randn(3, 5, 16).double(), torch.randn(3, 7, 16).double(), torch.randn(3, 7, 16).double()
    lengths = torch.tensor([7, 4, 1])
    pad = torch.arange(7)[None] >= lengths[:, None]                      # True = PAD
    out = mha(q, k, v, key_padding_mask=pad)
    ref = reference_mha(mha, q, k, v, (~pad)[:, None, :].expand(3, 5, 7))
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
    # padded keys really are ignored: changing them changes nothing
    k2, v2 = k.clone(), v.clone()
    k2[pad], v2[pad] = 100.0, -100.0
    torch.testing.assert_close(mha(q, k2, v2, key_padding_mask=pad), out, atol=1e-12, rtol=0)


def test_causal_self_attention_with_padding_matches_reference(mha: MultiHeadAttention) -> None:
    torch.manual_seed(2)
    x = torch.randn(2, 6, 16).double()
    pad = torch.tensor([[False] * 6, [False] * 4 + [True] * 2])
    out = mha(x, x, x, key_padding_mask=pad, causal=True)
    allowed = torch.ones(6, 6, dtype=torch.bool).tril()[None] & ~pad[:, None, :]
    torch.testing.assert_close(out, reference_mha(mha, x, x, x, allowed), atol=1e-6, rtol=0)
    # causal alone
    torch.testing.assert_close(mha(x, x, x, causal=True),
                               reference_mha(mha, x, x, x, torch.ones(2, 6, 6, dtype=torch.bool).tril()),
                               atol=1e-6, rtol=0)
    # no mask: every key
    torch.testing.assert_close(mha(x, x, x), reference_mha(mha, x, x, x, torch.ones(2, 6, 6, dtype=torch.bool)),
                               atol=1e-6, rtol=0)


def test_fully_masked_rows_give_zeros_not_nan(mha: MultiHeadAttention) -> None:
    x = torch.randn(2, 4, 16).double()
    pad = torch.tensor([[True] * 4, [False, False, True, True]])         # first utterance is empty
    out = mha(x, x, x, key_padding_mask=pad)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0], mha.W_o.bias.expand(4, 16))      # zero heads → W_o bias only
    torch.testing.assert_close(out[1], reference_mha(mha, x[1:], x[1:], x[1:], (~pad[1:])[:, None].expand(1, 4, 4))[0])


def test_fully_masked_rows_have_finite_gradients() -> None:
    mha = MultiHeadAttention(8, 2)
    x = torch.randn(1, 3, 8, requires_grad=True)
    mha(x, x, x, key_padding_mask=torch.tensor([[True, True, True]])).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in mha.parameters()) and torch.isfinite(x.grad).all()


def test_causal_mask_with_shorter_query_is_aligned_to_the_end() -> None:
    m = attention_mask(None, causal=True, Tq=2, Tk=4)
    assert m[0, 0].tolist() == [[True, True, True, False], [True, True, True, True]]


def test_d_model_must_divide_by_heads() -> None:
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(10, 3)


@pytest.mark.parametrize("pos", [0, 1, 7, 50, 999])
def test_positional_encoding_values(pos: int) -> None:
    d = 16
    table = sinusoid_table(1000, d, dtype=torch.float64)
    for i in range(d // 2):
        angle = pos / 10000 ** (2 * i / d)
        assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-12)
        assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-12)


def test_positional_encoding_module_adds_table_and_extends_past_max_len() -> None:
    pe = SinusoidalPositionalEncoding(8, max_len=10).eval()
    x = torch.zeros(2, 6, 8)
    torch.testing.assert_close(pe(x), sinusoid_table(6, 8).expand(2, 6, 8))
    torch.testing.assert_close(pe(x, offset=3)[0, 0], sinusoid_table(4, 8)[3])
    long = pe(torch.zeros(1, 25, 8))                                     # beyond max_len: computed on the fly
    torch.testing.assert_close(long[0], sinusoid_table(25, 8))
    scaled = SinusoidalPositionalEncoding(8, scale=True).eval()
    torch.testing.assert_close(scaled(torch.ones(1, 3, 8)), math.sqrt(8) + sinusoid_table(3, 8)[None])
