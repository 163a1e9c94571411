"""Transformer encoder and decoder stacks (Vaswani et al. 2017 §3.1; Ng, Sequence Models, week 4).

Each sub-layer (self-attention, cross-attention, position-wise feed-forward §3.3) is wrapped in a
residual connection with LayerNorm. ``pre_ln=False`` is the paper's post-LN ``LayerNorm(x + Sublayer(x))``;
``pre_ln=True`` computes ``x + Sublayer(LayerNorm(x))`` with a final LayerNorm after the stack
(Xiong et al. 2020: trains without a long warm-up). Padding masks are bool, True at padded positions.
"""

from __future__ import annotations

import torch
from torch import nn

from seqflow.models.attention import MultiHeadAttention
from seqflow.models.positional import SinusoidalPositionalEncoding


class FeedForward(nn.Module):
    """Position-wise feed-forward ``FFN(x) = max(0, x W_1 + b_1) W_2 + b_2`` (§3.3): ``(B, T, D) → (B, T, D)``."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_model, d_ff), nn.ReLU(), nn.Dropout(dropout), nn.Linear(d_ff, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _Residual(nn.Module):
    """Residual + LayerNorm around one sub-layer, pre-LN or post-LN."""

    def __init__(self, d_model: int, dropout: float, pre_ln: bool) -> None:
        super().__init__()
        self.norm, self.dropout, self.pre_ln = nn.LayerNorm(d_model), nn.Dropout(dropout), pre_ln

    def forward(self, x: torch.Tensor, sublayer) -> torch.Tensor:
        if self.pre_ln:
            return x + self.dropout(sublayer(self.norm(x)))
        return self.norm(x + self.dropout(sublayer(x)))


class TransformerEncoderLayer(nn.Module):
    """Self-attention + feed-forward, each with residual + LayerNorm: ``(B, T, D) → (B, T, D)``."""

    def __init__(self, d_model: int, num_heads: int, d_ff: int, dropout: float = 0.1, pre_ln: bool = True) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, num_heads, dropout)
        self.ff = FeedForward(d_model, d_ff, dropout)
        self.res_attn = _Residual(d_model, dropout, pre_ln)
        self.res_ff = _Residual(d_model, dropout, pre_ln)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.res_attn(x, lambda h: self.self_attn(h, h, h, key_padding_mask=pad_mask))
        return self.res_ff(x, self.ff)


class TransformerDecoderLayer(nn.Module):
    """Masked self-attention, cross-attention over the encoder memory, feed-forward (§3.1): ``(B, U, D)``."""

    def __init__(self, d_model: int, num_heads: int, d_ff: int, dropout: float = 0.1, pre_ln: bool = True) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, num_heads, dropout)
        self.cross_attn = MultiHeadAttention(d_model, num_heads, dropout)
        self.ff = FeedForward(d_model, d_ff, dropout)
        self.res_self = _Residual(d_model, dropout, pre_ln)
        self.res_cross = _Residual(d_model, dropout, pre_ln)
        self.res_ff = _Residual(d_model, dropout, pre_ln)

    def forward(self, y: torch.Tensor, memory: torch.Tensor, memory_pad_mask: torch.Tensor | None = None,
                tgt_pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        y = self.res_self(y, lambda h: self.self_attn(h, h, h, key_padding_mask=tgt_pad_mask, causal=True))
        y = self.res_cross(y, lambda h: self.cross_attn(h, memory, memory, key_padding_mask=memory_pad_mask))
        return self.res_ff(y, self.ff)


class TransformerEncoder(nn.Module):
    """A stack of ``num_layers`` encoder layers (positions are added by the caller).

    ``forward(x (B, T, D), pad_mask (B, T) bool True=PAD | None) -> (B, T, D)``. Outputs at valid
    frames depend only on valid frames (padded keys are masked in every layer).
    """

    def __init__(self, d_model: int, num_heads: int, num_layers: int, d_ff: int, dropout: float = 0.1,
                 pre_ln: bool = True) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerEncoderLayer(d_model, num_heads, d_ff, dropout, pre_ln) for _ in range(num_layers))
        self.final_norm = nn.LayerNorm(d_model) if pre_ln else nn.Identity()

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, pad_mask)
        return self.final_norm(x)


class TransformerDecoder(nn.Module):
    """Token embedding (× √d_model, §3.4) + sinusoidal positions → ``num_layers`` decoder layers → Linear(V).

    ``forward(tokens (B, U), memory (B, T, D), memory_pad_mask (B, T), tgt_pad_mask (B, U)) -> logits (B, U, V)``.
    Self-attention is causal: logits at position u depend only on ``tokens[:, :u + 1]``.
    """

    def __init__(self, vocab_size: int, d_model: int, num_heads: int, num_layers: int, d_ff: int,
                 dropout: float = 0.1, pre_ln: bool = True, max_len: int = 2000) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)
        self.pos = SinusoidalPositionalEncoding(d_model, max_len=max_len, dropout=dropout, scale=True)
        self.layers = nn.ModuleList(
            TransformerDecoderLayer(d_model, num_heads, d_ff, dropout, pre_ln) for _ in range(num_layers))
        self.final_norm = nn.LayerNorm(d_model) if pre_ln else nn.Identity()
        self.out = nn.Linear(d_model, vocab_size)

    def forward(self, tokens: torch.Tensor, memory: torch.Tensor, memory_pad_mask: torch.Tensor | None = None,
                tgt_pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        y = self.pos(self.embed(tokens))
        for layer in self.layers:
            y = layer(y, memory, memory_pad_mask, tgt_pad_mask)
        return self.out(self.final_norm(y))


def lengths_to_pad_mask(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """``lengths (B,)`` → bool ``(B, max_len)``, True at padded positions (index >= length)."""
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len, device=lengths.device)[None, :] >= lengths[:, None]
