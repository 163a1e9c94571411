"""Sinusoidal positional encoding (Vaswani et al. 2017 §3.5; Ng, Sequence Models, week 4).

PE(pos, 2i) = sin(pos / 10000^(2i / d_model)),  PE(pos, 2i + 1) = cos(pos / 10000^(2i / d_model)).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def sinusoid_table(length: int, d_model: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The ``(length, d_model)`` table of PE values for positions ``0 … length - 1`` (even ``d_model``)."""
    if d_model % 2:
        raise ValueError(f"d_model must be even for sinusoidal positions, got {d_model}")
    pos = torch.arange(length, dtype=torch.float64)[:, None]                 # (L, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)[None, :]        # (1, D/2): 2i
    angle = pos / torch.pow(10000.0, two_i / d_model)                        # pos / 10000^(2i/d)
    table = torch.empty(length, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle)
    return table.to(dtype)


class SinusoidalPositionalEncoding(nn.Module):
    """Adds PE to ``x (B, T, D)`` then applies dropout (§3.5 and §5.4 "residual dropout").

    Args:
        d_model: D (even). max_len: positions precomputed; longer inputs get a freshly computed table.
        dropout: dropout probability applied to the sum.
        scale: multiply ``x`` by √d_model before adding (as the paper does to token embeddings, §3.4).
    """

    def __init__(self, d_model: int, max_len: int = 10000, dropout: float = 0.0, scale: bool = False) -> None:
        super().__init__()
        self.d_model, self.xscale = d_model, math.sqrt(d_model) if scale else 1.0
        self.register_buffer("pe", sinusoid_table(max_len, d_model), persistent=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """``x (B, T, D)`` → ``(B, T, D)``; positions start at ``offset``."""
        T = x.shape[1]
        if offset + T <= self.pe.shape[0]:
            pe = self.pe[offset: offset + T]
        else:
            pe = sinusoid_table(offset + T, self.d_model)[offset:].to(self.pe.device)
        return self.dropout(x * self.xscale + pe.to(x.dtype))
