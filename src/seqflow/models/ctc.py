"""CTC speech recognizer: conv subsampling → sinusoidal positions → Transformer encoder → Linear → log_softmax.

Connectionist Temporal Classification (Graves et al. 2006): the network emits a distribution over
V tokens (blank = 0 included) at every output frame; a labelling's probability sums over all frame
paths that collapse to it (merge repeats, then drop blanks). Train with
:func:`seqflow.models.losses.ctc_loss`; decode with :mod:`seqflow.models.decoding`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from seqflow.models.losses import ctc_loss
from seqflow.models.positional import SinusoidalPositionalEncoding
from seqflow.models.subsampling import ConvSubsampling4x, subsampled_length
from seqflow.models.transformer import TransformerEncoder, lengths_to_pad_mask

__all__ = ["SpeechEncoder", "CTCModel", "ctc_loss", "min_frames_for_ctc", "ctc_output_frames", "ctc_feasible"]


def min_frames_for_ctc(token_ids: Sequence[int]) -> int:
    """Fewest output frames T' on which CTC can emit ``token_ids``: ``U + (number of adjacent repeats)``.

    A repeated label needs a blank between its copies ("hello" → h e l ∅ l o: 6 frames for U=5).
    """
    repeats = sum(1 for a, b in zip(token_ids, token_ids[1:]) if a == b)
    return len(token_ids) + repeats


def ctc_output_frames(num_samples: int, hop_length: int) -> int:
    """Output frames T' of the CTC encoder for ``num_samples`` audio samples: log-mel frames
    ``T = 1 + num_samples // hop_length`` (see :class:`seqflow.audio.features.LogMel`), then 4× subsampling.
    """
    return int(subsampled_length(1 + num_samples // hop_length))


def ctc_feasible(num_samples: int, token_ids: Sequence[int], hop_length: int) -> bool:
    """Whether an utterance of ``num_samples`` samples can carry ``token_ids`` under CTC.

    True iff ``ctc_output_frames(num_samples, hop_length) >= max(1, min_frames_for_ctc(token_ids))``.
    Callers quarantine the rest with reason ``too_short_for_ctc`` (their loss would be inf).
    """
    return ctc_output_frames(num_samples, hop_length) >= max(1, min_frames_for_ctc(token_ids))


class SpeechEncoder(nn.Module):
    """Shared ASR encoder: ``ConvSubsampling4x`` → ``SinusoidalPositionalEncoding`` → ``TransformerEncoder``.

    ``forward(feats (B, T, F), lengths (B,) | None) -> (x (B, T', D), out_lengths (B,), pad_mask (B, T'))``
    with ``T' = subsampled_length(T)`` and ``pad_mask`` True at padded output frames.
    """

    def __init__(self, n_mels: int, d_model: int = 144, num_heads: int = 4, num_layers: int = 4, d_ff: int = 576,
                 dropout: float = 0.1, pre_ln: bool = True) -> None:
        super().__init__()
        self.subsampling = ConvSubsampling4x(n_mels, d_model)
        self.pos = SinusoidalPositionalEncoding(d_model, dropout=dropout, scale=True)
        self.encoder = TransformerEncoder(d_model, num_heads, num_layers, d_ff, dropout, pre_ln)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, out_lengths = self.subsampling(feats, lengths)
        pad_mask = lengths_to_pad_mask(out_lengths, x.shape[1])
        return self.encoder(self.pos(x), pad_mask), out_lengths, pad_mask


class CTCModel(nn.Module):
    """Transformer-encoder CTC model: ``(B, T, F)`` log-mel → ``(B, T', V)`` log-probabilities at 40 ms.

    Args:
        n_mels: F. vocab_size: V including the blank (id 0).
        d_model, num_heads, num_layers, d_ff, dropout, pre_ln: encoder sizes (see :class:`SpeechEncoder`).

    >>> m = CTCModel(n_mels=40, vocab_size=30, d_model=32, num_heads=2, num_layers=1, d_ff=64).eval()
    >>> lp, n = m(torch.zeros(2, 501, 40), torch.tensor([501, 300]))
    >>> tuple(lp.shape), n.tolist()
    ((2, 124, 30), [124, 74])
    """

    def __init__(self, n_mels: int, vocab_size: int, d_model: int = 144, num_heads: int = 4, num_layers: int = 4,
                 d_ff: int = 576, dropout: float = 0.1, pre_ln: bool = True) -> None:
        super().__init__()
        self.n_mels, self.vocab_size = n_mels, vocab_size
        self.encoder = SpeechEncoder(n_mels, d_model, num_heads, num_layers, d_ff, dropout, pre_ln)
        self.ctc_head = nn.Linear(d_model, vocab_size)

    def forward(self, feats: torch.Tensor, feat_lengths: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: ``feats (B, T, F)``, ``feat_lengths (B,)`` valid frames (``None``: all T).

        Returns ``(log_probs (B, T', V), out_lengths (B,))``; frames ``>= out_lengths`` are padding.
        """
        x, out_lengths, _ = self.encoder(feats, feat_lengths)
        return self.ctc_head(x).log_softmax(dim=-1), out_lengths
