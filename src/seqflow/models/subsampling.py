"""4× convolutional subsampling front end for speech Transformers (as in ESPnet's Conv2dSubsampling).

Log-mel frames ``(B, T, F)`` at 10 ms → two ``Conv2d(kernel 3, stride 2)`` + ReLU over (time, mel)
→ Linear to ``d_model`` at 40 ms per output frame. The convolutions have no padding, so every output
frame ``t' < subsampled_length(length)`` sees only valid input frames.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_out(n: int | torch.Tensor) -> int | torch.Tensor:
    """Length after one unpadded kernel-3 stride-2 convolution: ``(n - 3) // 2 + 1 = (n - 1) // 2``."""
    return (n - 1) // 2


def subsampled_length(T: int | torch.Tensor) -> int | torch.Tensor:
    """Exact output frames T' of :class:`ConvSubsampling4x` for T input frames: ``((T - 1) // 2 - 1) // 2``,
    clipped at 0 (T < 7 gives 0). Works on ints and integer tensors. E.g. 5 s at hop 10 ms: T=501 → 124.
    """
    out = _conv_out(_conv_out(T))
    return out.clamp(min=0) if isinstance(out, torch.Tensor) else max(0, out)


class ConvSubsampling4x(nn.Module):
    """``(B, T, F)`` log-mel + ``lengths (B,)`` → ``(B, T', d_model)`` + ``out_lengths (B,)``, T' ≈ T / 4.

    Args:
        n_mels: F, mel bins (>= 7). d_model: D, output width (also the conv channel count).
        channels: conv channels (default ``d_model``).

    >>> sub = ConvSubsampling4x(n_mels=40, d_model=16)
    >>> y, n = sub(torch.zeros(2, 501, 40), torch.tensor([501, 300]))
    >>> tuple(y.shape), n.tolist()
    ((2, 124, 16), [124, 74])
    """

    def __init__(self, n_mels: int, d_model: int, channels: int | None = None) -> None:
        super().__init__()
        if n_mels < 7:
            raise ValueError(f"n_mels must be >= 7 for two stride-2 convolutions, got {n_mels}")
        channels = channels or d_model
        self.conv = nn.Sequential(
            nn.Conv2d(1, channels, kernel_size=3, stride=2), nn.ReLU(),
            nn.Conv2d(channels, channels, kernel_size=3, stride=2), nn.ReLU())
        self.out = nn.Linear(channels * subsampled_length(n_mels), d_model)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: ``feats (B, T, F)``; ``lengths (B,)`` valid frames (``None``: all T).

        Returns ``(x (B, T', D), out_lengths (B,))`` with ``T' = subsampled_length(T)``.
        """
        B, T, _ = feats.shape
        if T < 7:
            raise ValueError(f"ConvSubsampling4x needs at least 7 feature frames (70 ms), got T={T}")
        if lengths is None:
            lengths = torch.full((B,), T, dtype=torch.long, device=feats.device)
        x = self.conv(feats.unsqueeze(1))                     # (B, C, T', F')
        b, c, t, f = x.shape
        x = self.out(x.transpose(1, 2).reshape(b, t, c * f))  # (B, T', D)
        return x, subsampled_length(lengths.long())
