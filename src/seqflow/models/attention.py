"""Multi-head scaled dot-product attention (Vaswani et al. 2017 §3.2; Ng, Sequence Models, week 4).

Attention(Q, K, V) = softmax(Q Kᵀ / √d_k) V   (§3.2.1)
MultiHead(Q, K, V) = Concat(head_1, …, head_h) W_o,  head_i = Attention(Q W_q^i, K W_k^i, V W_v^i)   (§3.2.2)

The names follow the course: ``Q``, ``K``, ``V`` are the projected queries, keys and values,
``num_heads`` is h and ``d_k = d_model // num_heads`` is the per-head width. The inner product runs
through :func:`torch.nn.functional.scaled_dot_product_attention` (fused kernels on GPU) with one
boolean mask (True = attend) that combines key padding and causal masking.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def attention_mask(key_padding_mask: torch.Tensor | None, causal: bool, Tq: int, Tk: int,
                   device: torch.device | None = None) -> torch.Tensor | None:
    """Boolean mask ``(B|1, 1, Tq, Tk)``, True where query i may attend key j; ``None`` if nothing is masked.

    Args:
        key_padding_mask: ``(B, Tk)`` bool, True at padded keys, or ``None``.
        causal: mask future keys. With ``Tq < Tk`` the queries are the last ``Tq`` positions
            (query i sits at key position ``i + Tk - Tq``) and may attend keys ``j <= i + Tk - Tq``.
        Tq, Tk: query and key lengths.
    """
    mask = None
    if key_padding_mask is not None:
        mask = (~key_padding_mask.bool())[:, None, None, :]  # (B, 1, 1, Tk)
        device = mask.device
    if causal:
        tri = torch.ones(Tq, Tk, dtype=torch.bool, device=device).tril(diagonal=Tk - Tq)[None, None]
        mask = tri if mask is None else mask & tri
    return mask


class MultiHeadAttention(nn.Module):
    """Multi-head attention with explicit ``W_q, W_k, W_v, W_o`` projections (Vaswani et al. 2017 §3.2.2).

    Args:
        d_model: D, model width (input and output). num_heads: h; ``d_model % num_heads == 0``.
        dropout: dropout on the attention weights (training only).

    Query rows whose keys are all masked (e.g. an empty utterance) get a zero output instead of NaN.

    >>> mha = MultiHeadAttention(d_model=8, num_heads=2)
    >>> x = torch.randn(2, 5, 8)
    >>> mha(x, x, x, key_padding_mask=torch.tensor([[False] * 5, [False] * 3 + [True] * 2])).shape
    torch.Size([2, 5, 8])
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if d_model % num_heads != 0:
            raise ValueError(f"d_model={d_model} is not divisible by num_heads={num_heads}")
        self.d_model, self.num_heads, self.d_k = d_model, num_heads, d_model // num_heads
        self.dropout = dropout
        self.W_q = nn.Linear(d_model, d_model)
        self.W_k = nn.Linear(d_model, d_model)
        self.W_v = nn.Linear(d_model, d_model)
        self.W_o = nn.Linear(d_model, d_model)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, D)`` → ``(B, h, T, d_k)``."""
        B, T, _ = x.shape
        return x.view(B, T, self.num_heads, self.d_k).transpose(1, 2)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        """Args: ``query (B, Tq, D)``, ``key (B, Tk, D)``, ``value (B, Tk, D)``; ``key_padding_mask
        (B, Tk)`` bool, True at padded keys; ``causal``: mask keys after the query position.

        Returns ``(B, Tq, D)``.
        """
        B, Tq, _ = query.shape
        Tk = key.shape[1]
        Q = self._split_heads(self.W_q(query))  # (B, h, Tq, d_k)
        K = self._split_heads(self.W_k(key))    # (B, h, Tk, d_k)
        V = self._split_heads(self.W_v(value))  # (B, h, Tk, d_k)
        mask = attention_mask(key_padding_mask, causal, Tq, Tk, device=query.device)
        empty_rows = None
        if mask is not None:
            mask = mask.expand(B, 1, Tq, Tk)
            empty_rows = ~mask.any(dim=-1, keepdim=True)  # (B, 1, Tq, 1): nothing to attend to
            mask = mask | empty_rows  # such rows attend anywhere (finite, no NaN); output zeroed below
        heads = F.scaled_dot_product_attention(  # softmax(Q Kᵀ / √d_k) V per head
            Q, K, V, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        if empty_rows is not None:
            heads = heads.masked_fill(empty_rows, 0.0)
        concat = heads.transpose(1, 2).reshape(B, Tq, self.d_model)  # Concat(head_1..head_h)
        return self.W_o(concat)
