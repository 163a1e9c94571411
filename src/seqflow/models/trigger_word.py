"""Trigger-word detector network (Sequence Models course, week 3), a plain ``nn.Module``.

Andrew Ng, *Sequence Models* (deeplearning.ai / Coursera), week 3, "Trigger word detection":
spectrogram → Conv1D(196, kernel 15, stride 4) → BatchNorm → ReLU → Dropout → GRU(128) → Dropout →
BatchNorm → GRU(128) → Dropout → BatchNorm → Dropout → TimeDistributed(Dense(1, sigmoid)).
Here the input is a log-mel spectrogram and the sigmoid is applied outside the network
(training uses BCE-with-logits, detection applies ``torch.sigmoid``). The GRUs are unidirectional,
so the network can stream: feed chunks in order and carry ``h_n`` into the next call.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def _num_frames(num_samples, hop_length: int):
    """Log-mel frames of ``num_samples`` samples (centred STFT): ``1 + S // hop`` (as ``LogMel.num_frames``)."""
    return 1 + num_samples // hop_length


class StepGeometry:
    """Feature frames and seconds ↔ output steps of the detector's unpadded Conv1D: the one owner
    of the step formulas (:class:`TriggerWordNet` inherits them; a bare ``StepGeometry(kernel,
    stride)`` serves code that has the numbers but no net).

    Output step ``k`` sees feature frames ``k*stride .. k*stride + kernel - 1``; feature frame
    ``f`` is centred on sample ``f * hop`` (time ``f * hop / sample_rate`` seconds).

    >>> g = StepGeometry(15, 4)
    >>> g.num_steps(1001), g.seconds_to_step(2.0, 16000, 160), round(g.step_to_seconds(47, 16000, 160), 2)
    (247, 47, 2.02)
    """

    conv_kernel: int
    conv_stride: int

    def __init__(self, conv_kernel: int = 15, conv_stride: int = 4) -> None:
        self.conv_kernel, self.conv_stride = int(conv_kernel), int(conv_stride)

    def num_steps(self, num_frames):
        """Output steps ``T' = (T - kernel) // stride + 1`` for ``T`` feature frames, 0 if ``T < kernel``.
        Works on ints, numpy arrays and tensors (elementwise)."""
        steps = (num_frames - self.conv_kernel) // self.conv_stride + 1
        if isinstance(steps, torch.Tensor):
            return steps.clamp(min=0)
        return np.maximum(steps, 0) if isinstance(steps, np.ndarray) else max(0, int(steps))

    def steps_for_samples(self, num_samples, hop_length: int):
        """Output steps for ``num_samples`` audio samples (log-mel hop ``hop_length``)."""
        return self.num_steps(_num_frames(num_samples, hop_length))

    def step_end_frame(self, k):
        """Last feature frame of output step ``k``'s receptive field: ``k*stride + kernel - 1``."""
        return k * self.conv_stride + self.conv_kernel - 1

    def first_step_at_frame(self, frame: int) -> int:
        """Smallest step ``k >= 0`` whose receptive field reaches feature frame ``frame``
        (``step_end_frame(k) >= frame``)."""
        return max(0, -(-(int(frame) - (self.conv_kernel - 1)) // self.conv_stride))  # ceil division

    def step_seconds(self, sample_rate: int, hop_length: int) -> float:
        """Seconds per output step: ``stride * hop / sample_rate`` (0.04 s by default)."""
        return self.conv_stride * hop_length / sample_rate

    def step_to_seconds(self, k, sample_rate: int, hop_length: int):
        """Step → time: the time [s] of the END of step ``k``'s receptive field
        (``step_end_frame(k) * hop / sample_rate``); elementwise on arrays of steps."""
        out = self.step_end_frame(np.asarray(k)) * (hop_length / sample_rate)
        return float(out) if np.ndim(out) == 0 else out

    def seconds_to_step(self, t_s: float, sample_rate: int, hop_length: int) -> int:
        """Time → step: the first step that has heard the audio up to ``t_s`` seconds, i.e. whose
        receptive field reaches the frame after sample ``t_s * sample_rate`` (frame
        ``1 + samples // hop``). Inverse of :meth:`step_to_seconds` up to one step."""
        return self.first_step_at_frame(_num_frames(int(round(float(t_s) * sample_rate, 6)), hop_length))


def output_steps(num_samples: int, hop_length: int, conv_kernel: int, conv_stride: int) -> int:
    """Number of model output steps for ``num_samples`` input samples.

    Log-mel frames ``T = 1 + S // hop`` (centred STFT), then an unpadded Conv1D:
    ``T' = (T - kernel) // stride + 1`` (:meth:`StepGeometry.num_steps`). E.g. 10 s at 16 kHz,
    hop 160, k=15, s=4 → 247 steps.
    """
    return StepGeometry(conv_kernel, conv_stride).steps_for_samples(int(num_samples), hop_length)


class TriggerWordNet(nn.Module, StepGeometry):
    """Log-mel frames ``(B, T, F)`` → one trigger-word logit per output step ``(B, T')``.

    ``T' = (T - conv_kernel) // conv_stride + 1`` (the Conv1D has no padding). The step geometry
    (:meth:`num_steps`, :meth:`step_to_seconds`, :meth:`seconds_to_step`, :meth:`step_seconds`)
    comes from :class:`StepGeometry`, so labels and detections use the net's own stride.
    Architecture of the course's trigger-word model (Ng, Sequence Models, week 3) after a
    per-mel-bin input BatchNorm: Conv1D → BatchNorm1d → ReLU → Dropout, then ``gru_layers`` ×
    (GRU → Dropout → BatchNorm1d), then Dropout → Linear(1). In eval mode every layer is causal
    in time except the convolution's receptive field, so chunked inference with a carried GRU
    state reproduces a whole-stream pass (see :class:`seqflow.serve.detector.TriggerWordDetector`).

    Args:
        n_mels: F, mel bins of the input features.
        conv_channels, conv_kernel, conv_stride: Conv1D width, kernel and stride in feature frames.
        gru_hidden: hidden size of every GRU layer. gru_layers: number of GRU layers (>= 1).
        dropout: dropout probability after the convolution, after each GRU, and before the output.

    >>> net = TriggerWordNet(n_mels=40).eval()
    >>> logits, h = net(torch.zeros(2, 1001, 40))
    >>> tuple(logits.shape), tuple(h.shape)
    ((2, 247), (2, 2, 128))
    """

    def __init__(self, n_mels: int, conv_channels: int = 196, conv_kernel: int = 15, conv_stride: int = 4,
                 gru_hidden: int = 128, gru_layers: int = 2, dropout: float = 0.2) -> None:
        super().__init__()
        if gru_layers < 1:
            raise ValueError(f"gru_layers must be >= 1, got {gru_layers}")
        self.n_mels, self.conv_kernel, self.conv_stride = n_mels, conv_kernel, conv_stride
        self.gru_hidden, self.gru_layers = gru_hidden, gru_layers
        # Per-mel-bin input normalisation (running statistics): raw log-mel has a large offset
        # (about -5 … -14), which otherwise makes the conv BatchNorm's running statistics lag
        # behind training. Per-frame affine in eval, so streaming stays exact.
        self.input_norm = nn.BatchNorm1d(n_mels)
        self.conv = nn.Conv1d(n_mels, conv_channels, kernel_size=conv_kernel, stride=conv_stride)
        self.conv_bn = nn.BatchNorm1d(conv_channels)
        self.conv_drop = nn.Dropout(dropout)
        self.grus = nn.ModuleList()
        self.gru_bns = nn.ModuleList()
        self.gru_drops = nn.ModuleList()
        for i in range(gru_layers):
            self.grus.append(nn.GRU(conv_channels if i == 0 else gru_hidden, gru_hidden, batch_first=True))
            self.gru_drops.append(nn.Dropout(dropout))
            self.gru_bns.append(nn.BatchNorm1d(gru_hidden))
        self.out_drop = nn.Dropout(dropout)
        self.out = nn.Linear(gru_hidden, 1)

    def forward(self, feats: torch.Tensor, h0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: ``feats (B, T, F)`` log-mel frames with ``T >= conv_kernel``; ``h0
        (gru_layers, B, gru_hidden)`` initial GRU states (``None``: zeros).

        Returns: ``(logits (B, T'), h_n (gru_layers, B, gru_hidden))``; probabilities are
        ``torch.sigmoid(logits)``.
        """
        x = self.conv(self.input_norm(feats.transpose(1, 2)))  # (B, F, T) → (B, C, T')
        x = self.conv_drop(torch.relu(self.conv_bn(x))).transpose(1, 2)  # (B, T', C)
        h_out = []
        for i, (gru, drop, bn) in enumerate(zip(self.grus, self.gru_drops, self.gru_bns)):
            x, h = gru(x, None if h0 is None else h0[i:i + 1].contiguous())
            h_out.append(h)
            x = bn(drop(x).transpose(1, 2)).transpose(1, 2)  # BatchNorm1d over (B, H, T')
        logits = self.out(self.out_drop(x)).squeeze(-1)  # (B, T')
        return logits, torch.cat(h_out, dim=0)
