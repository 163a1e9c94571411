"""Trigger-word frame labels from positive end times, at the net's own output-step geometry.

Shards store segment times only (seconds); labels are derived when a batch is trained on, from
the net's :class:`~seqflow.models.trigger_word.StepGeometry` (the one owner of the step
formulas) and a label window in seconds (``clips.label_seconds``), so a different stride or
front end neither re-synthesises clips nor changes what a label means.

The detector sees log-mel frames ``t = 0 .. T-1`` (centred STFT, frame ``t`` centred on sample
``t * hop``) and an unpadded Conv1D (kernel ``k``, stride ``s``), so output step ``j`` covers
feature frames ``j*s .. j*s + k - 1``. A positive that ends at ``e`` seconds is labelled on the
``label_steps = round(label_seconds / step_s)`` output steps starting at the first step whose
receptive field reaches the frame after the positive's last sample (course method: "1s right
after the word").

>>> g = StepGeometry(15, 4)
>>> labels = frame_labels([2.0], 160000, 16000, 160, g, label_window_steps(2.0, g, 16000, 160))
>>> int(labels.argmax()), int(labels.sum()), round(step_to_seconds(47, 16000, 160, 15, 4), 2)
(47, 50, 2.02)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from seqflow.models.trigger_word import StepGeometry


def label_window_steps(label_seconds: float, geometry: StepGeometry, sample_rate: int, hop_length: int) -> int:
    """Output steps labelled 1 after each positive: ``round(label_seconds / step_s)`` with
    ``step_s = geometry.step_seconds(sample_rate, hop_length)`` (2.0 s at 40 ms → 50)."""
    return int(round(float(label_seconds) / geometry.step_seconds(sample_rate, hop_length)))


def frame_labels(positive_ends_s: Iterable[float], num_samples: int, sample_rate: int, hop_length: int,
                 geometry: StepGeometry, label_steps: int) -> np.ndarray:
    """Per-output-step 0/1 labels of one clip.

    Args:
        positive_ends_s: end time [s] of every trigger word in the clip (clip starts at 0 s).
        num_samples: clip length S [samples] (a padded batch width gives the padded step count).
        sample_rate: [Hz]; hop_length: log-mel hop [samples].
        geometry: the detector's step geometry (a :class:`TriggerWordNet` or ``StepGeometry``).
        label_steps: how many output steps are set to 1 after each positive (clipped at the end);
            see :func:`label_window_steps`.

    Returns:
        ``(Ty,)`` uint8 with ``Ty = geometry.steps_for_samples(num_samples, hop_length)``;
        ``labels[k : k + label_steps] = 1`` with ``k = geometry.seconds_to_step(end)`` per positive.
    """
    ty = geometry.steps_for_samples(int(num_samples), hop_length)
    labels = np.zeros(ty, dtype=np.uint8)
    for end in positive_ends_s:
        k = geometry.seconds_to_step(float(end), sample_rate, hop_length)
        if k < ty:
            labels[k:min(ty, k + int(label_steps))] = 1
    return labels


def batch_labels(positive_ends_s: Sequence[Sequence[float]], num_samples: int, sample_rate: int,
                 hop_length: int, geometry: StepGeometry, label_seconds: float) -> np.ndarray:
    """Labels of a padded batch: ``(B, Ty)`` float32, row ``i`` = :func:`frame_labels` of clip ``i``'s
    positive ends over the padded width ``num_samples`` [samples] (steps past a clip's own end
    are padding; the loss masks them), window :func:`label_window_steps` of ``label_seconds``."""
    steps = label_window_steps(label_seconds, geometry, sample_rate, hop_length)
    ty = geometry.steps_for_samples(int(num_samples), hop_length)
    out = np.zeros((len(positive_ends_s), ty), dtype=np.float32)
    for i, ends in enumerate(positive_ends_s):
        out[i] = frame_labels(ends, num_samples, sample_rate, hop_length, geometry, steps)
    return out


def first_step_after(end_s: float, sample_rate: int, hop_length: int, conv_kernel: int, conv_stride: int) -> int:
    """First output step that has heard the audio up to ``end_s`` [s]
    (:meth:`StepGeometry.seconds_to_step`); never negative."""
    return StepGeometry(conv_kernel, conv_stride).seconds_to_step(end_s, sample_rate, hop_length)


def step_to_seconds(k: int | np.ndarray, sample_rate: int, hop_length: int, conv_kernel: int,
                    conv_stride: int) -> float | np.ndarray:
    """Time [s] of the END of output step ``k``'s receptive field (:meth:`StepGeometry.step_to_seconds`);
    elementwise on arrays of steps."""
    return StepGeometry(conv_kernel, conv_stride).step_to_seconds(k, sample_rate, hop_length)


def step_seconds(sample_rate: int, hop_length: int, conv_stride: int) -> float:
    """Seconds per output step: ``conv_stride * hop_length / sample_rate`` (:meth:`StepGeometry.step_seconds`)."""
    return StepGeometry(conv_stride=conv_stride).step_seconds(sample_rate, hop_length)
