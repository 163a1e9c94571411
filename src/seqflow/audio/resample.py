"""Sample-rate conversion with soxr (high quality, deterministic)."""

from __future__ import annotations

import numpy as np
import soxr


def resample(wav: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample a mono waveform.

    Args:
        wav: ``(S,)`` float32 samples in [-1, 1] at ``sr_in`` Hz.
        sr_in: input sample rate [Hz].
        sr_out: output sample rate [Hz].

    Returns:
        ``(S * sr_out / sr_in,)`` float32 samples; the input itself when the rates match.
    """
    if sr_in == sr_out:
        return wav.astype(np.float32, copy=False)
    return soxr.resample(wav.astype(np.float32, copy=False), sr_in, sr_out, quality="HQ").astype(np.float32)
