"""Trigger-word frame labels: the one place where seconds become model output steps and back.

The detector sees log-mel frames ``t = 0 .. T-1`` (centred STFT, frame ``t`` centred on sample
``t * hop``) and an unpadded Conv1D (kernel ``k``, stride ``s``), so output step ``j`` covers
feature frames ``j*s .. j*s + k - 1``. A positive that ends at ``e`` seconds is labelled on the
``label_steps`` output steps starting at the first step whose receptive field reaches the
frame after the positive's last sample (course method: "1s right after the word").

>>> labels = frame_labels([2.0], 160000, 16000, 160, 15, 4, 50)
>>> int(labels.argmax()), int(labels.sum()), round(step_to_seconds(47, 16000, 160, 15, 4), 2)
(47, 50, 2.02)
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from seqflow.models.trigger_word import output_steps


def end_frame(end_s: float, sample_rate: int, hop_length: int) -> int:
    """Feature frame index just after a positive that ends at ``end_s`` seconds:
    ``1 + int(end_s * sample_rate) // hop_length``."""
    return 1 + int(round(end_s * sample_rate, 6)) // hop_length


def first_step_after(end_s: float, sample_rate: int, hop_length: int, conv_kernel: int, conv_stride: int) -> int:
    """First output step ``k`` whose receptive-field end ``k*stride + kernel - 1`` (in feature frames)
    is at or after :func:`end_frame` of ``end_s``; never negative."""
    need = end_frame(end_s, sample_rate, hop_length) - (conv_kernel - 1)
    return max(0, -(-need // conv_stride))  # ceil division


def frame_labels(positive_ends_s: Iterable[float], num_samples: int, sample_rate: int, hop_length: int,
                 conv_kernel: int, conv_stride: int, label_steps: int) -> np.ndarray:
    """Per-output-step 0/1 labels of one clip.

    Args:
        positive_ends_s: end time [s] of every trigger word in the clip (clip starts at 0 s).
        num_samples: clip length S [samples].
        sample_rate: [Hz]; hop_length: log-mel hop [samples]; conv_kernel / conv_stride: the
            detector's first Conv1D (no padding).
        label_steps: how many output steps are set to 1 after each positive (clipped at the end).

    Returns:
        ``(Ty,)`` uint8 with ``Ty = output_steps(num_samples, hop_length, conv_kernel, conv_stride)``;
        ``labels[k : k + label_steps] = 1`` with ``k = first_step_after(end)`` for each positive.
    """
    ty = output_steps(int(num_samples), hop_length, conv_kernel, conv_stride)
    labels = np.zeros(ty, dtype=np.uint8)
    for end in positive_ends_s:
        k = first_step_after(float(end), sample_rate, hop_length, conv_kernel, conv_stride)
        if k < ty:
            labels[k:min(ty, k + label_steps)] = 1
    return labels


def step_to_seconds(k: int | np.ndarray, sample_rate: int, hop_length: int, conv_kernel: int,
                    conv_stride: int) -> float | np.ndarray:
    """Time [s] of the END of output step ``k``'s receptive field: frame ``k*stride + kernel - 1``
    times ``hop / sample_rate``. Inverse of :func:`first_step_after` up to one step (40 ms by default);
    works elementwise on arrays of steps."""
    frames = np.asarray(k) * conv_stride + conv_kernel - 1
    out = frames * (hop_length / sample_rate)
    return float(out) if np.ndim(out) == 0 else out


def step_seconds(sample_rate: int, hop_length: int, conv_stride: int) -> float:
    """Seconds per output step (``label_step_s``): ``conv_stride * hop_length / sample_rate``."""
    return conv_stride * hop_length / sample_rate
