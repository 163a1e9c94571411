"""Attention-based encoder-decoder ASR (Vaswani et al. 2017) with an optional CTC head
(joint CTC/attention, Watanabe et al. 2017).

Encoder: :class:`seqflow.models.ctc.SpeechEncoder` (4× conv subsampling, sinusoidal positions,
Transformer encoder). Decoder: :class:`seqflow.models.transformer.TransformerDecoder` (causal
self-attention, cross-attention). Teacher forcing: decoder input ``[sos, y_1 … y_U]``, target
``[y_1 … y_U, eos]`` (:func:`add_sos_eos`). Loss: :func:`seqflow.models.losses.joint_ctc_attention_loss`.
"""

from __future__ import annotations

import torch
from torch import nn

from seqflow.models.ctc import SpeechEncoder
from seqflow.models.losses import IGNORE_INDEX
from seqflow.models.transformer import TransformerDecoder, lengths_to_pad_mask


def add_sos_eos(targets: torch.Tensor, target_lengths: torch.Tensor, sos: int, eos: int, pad: int = 0,
                ignore_index: int = IGNORE_INDEX) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Teacher-forcing pairs from padded ``targets (B, U)`` and ``target_lengths (B,)``.

    Returns ``(tokens_in (B, U+1), tokens_out (B, U+1), in_lengths (B,))``: ``tokens_in = [sos, y…]``
    padded with ``pad``; ``tokens_out = [y…, eos]`` padded with ``ignore_index``; ``in_lengths = U_b + 1``.
    """
    B, U = targets.shape
    pos = torch.arange(U + 1, device=targets.device)[None, :]
    lengths = target_lengths.long()[:, None]
    body = torch.cat([targets.long(), targets.new_zeros(B, 1, dtype=torch.long)], dim=1)  # (B, U+1)
    tokens_out = torch.where(pos < lengths, body, torch.full_like(body, ignore_index))
    tokens_out = torch.where(pos == lengths, torch.full_like(body, eos), tokens_out)
    shifted = torch.cat([torch.full((B, 1), sos, dtype=torch.long, device=targets.device), targets.long()], dim=1)
    tokens_in = torch.where(pos <= lengths, shifted, torch.full_like(shifted, pad))
    return tokens_in, tokens_out, target_lengths.long() + 1


class TransformerASR(nn.Module):
    """Transformer encoder-decoder speech recognizer.

    Args:
        n_mels: F. vocab_size: V (blank=0, sos, eos, unk and the tokens; blank is the decoder's padding).
        d_model, num_heads, d_ff, dropout, pre_ln: sizes shared by encoder and decoder.
        enc_layers, dec_layers: stack depths. ctc_weight: λ of the joint loss; > 0 adds a CTC head.

    >>> m = TransformerASR(40, 30, d_model=32, num_heads=2, enc_layers=1, dec_layers=1, d_ff=64).eval()
    >>> att, ctc, n = m(torch.zeros(2, 201, 40), torch.tensor([201, 101]), torch.ones(2, 7, dtype=torch.long))
    >>> tuple(att.shape), tuple(ctc.shape), n.tolist()
    ((2, 7, 30), (2, 49, 30), [49, 24])
    """

    def __init__(self, n_mels: int, vocab_size: int, d_model: int = 144, num_heads: int = 4, enc_layers: int = 4,
                 dec_layers: int = 2, d_ff: int = 576, dropout: float = 0.1, pre_ln: bool = True,
                 ctc_weight: float = 0.3) -> None:
        super().__init__()
        if not 0.0 <= ctc_weight < 1.0:
            raise ValueError(f"ctc_weight must be in [0, 1), got {ctc_weight}")
        self.n_mels, self.vocab_size, self.ctc_weight = n_mels, vocab_size, ctc_weight
        self.encoder = SpeechEncoder(n_mels, d_model, num_heads, enc_layers, d_ff, dropout, pre_ln)
        self.decoder = TransformerDecoder(vocab_size, d_model, num_heads, dec_layers, d_ff, dropout, pre_ln)
        self.ctc_head = nn.Linear(d_model, vocab_size) if ctc_weight > 0 else None

    def encode(self, feats: torch.Tensor, lengths: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``feats (B, T, F)``, ``lengths (B,)`` → ``(memory (B, T', D), mem_lengths (B,), ctc_log_probs)``,
        ``ctc_log_probs (B, T', V)`` from the CTC head, or ``None`` without one."""
        memory, mem_lengths, _ = self.encoder(feats, lengths)
        ctc = self.ctc_head(memory).log_softmax(-1) if self.ctc_head is not None else None
        return memory, mem_lengths, ctc

    def decode(self, tokens: torch.Tensor, memory: torch.Tensor, mem_lengths: torch.Tensor,
               token_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder logits ``(B, U, V)`` for ``tokens (B, U)`` (starting with sos) over ``memory (B, T', D)``."""
        mem_mask = lengths_to_pad_mask(mem_lengths, memory.shape[1])
        tgt_mask = None if token_lengths is None else lengths_to_pad_mask(token_lengths, tokens.shape[1])
        return self.decoder(tokens, memory, mem_mask, tgt_mask)

    def decode_step(self, tokens: torch.Tensor, memory: torch.Tensor, mem_lengths: torch.Tensor) -> torch.Tensor:
        """Next-token log-probabilities ``(N, V)`` after the unpadded prefixes ``tokens (N, u)`` (sos first)."""
        return self.decode(tokens, memory, mem_lengths)[:, -1].log_softmax(-1)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor | None, tokens_in: torch.Tensor,
                tokens_in_lengths: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Teacher-forced pass. Args: ``feats (B, T, F)``, ``lengths (B,)``, ``tokens_in (B, U)`` = ``[sos, y…]``
        padded, ``tokens_in_lengths (B,)`` (``None``: no target padding mask; causal masking keeps valid
        positions exact either way).

        Returns ``(att_logits (B, U, V), ctc_log_probs (B, T', V) | None, out_lengths (B,))``.
        """
        memory, mem_lengths, ctc = self.encode(feats, lengths)
        return self.decode(tokens_in, memory, mem_lengths, tokens_in_lengths), ctc, mem_lengths
