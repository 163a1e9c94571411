"""Log-mel features and SpecAugment, computed on the training device inside the model step.

``torch.stft`` + ``librosa.filters.mel`` (Slaney mel scale), as NeMo does; no torchaudio.
"""

from __future__ import annotations

import librosa
import torch
from torch import nn


class LogMel(nn.Module):
    """Waveform ``(B, S)`` at ``sample_rate`` → log-mel frames ``(B, T, F)`` at ``hop_length`` hop.

    ``T = 1 + S // hop_length`` (centred STFT, reflect padding). Default: 25 ms window,
    10 ms hop, 40 mel bins at 16 kHz; ``log(mel power + 1e-6)``.
    """

    def __init__(self, sample_rate: int = 16000, n_fft: int = 512, win_length: int = 400,
                 hop_length: int = 160, n_mels: int = 40, f_min: float = 20.0,
                 f_max: float | None = None) -> None:
        super().__init__()
        self.sample_rate, self.n_fft, self.win_length, self.hop_length = sample_rate, n_fft, win_length, hop_length
        self.n_mels = n_mels
        fb = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=f_min,
                                 fmax=f_max or sample_rate / 2)
        self.register_buffer("mel_fb", torch.from_numpy(fb).float(), persistent=False)  # (F, n_fft//2+1)
        self.register_buffer("window", torch.hann_window(win_length), persistent=False)

    def num_frames(self, num_samples: int | torch.Tensor) -> int | torch.Tensor:
        """Frames produced for ``num_samples`` samples: ``1 + S // hop_length``."""
        return 1 + num_samples // self.hop_length

    @torch.no_grad()
    def forward(self, wav: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: ``wav (B, S)`` float, ``lengths (B,)`` valid samples (``None``: all valid).

        Returns: ``(feats (B, T, F), frame_lengths (B,))``.
        """
        spec = torch.stft(wav.float(), self.n_fft, self.hop_length, self.win_length, self.window,
                          center=True, pad_mode="reflect", return_complex=True)
        power = spec.real.pow(2) + spec.imag.pow(2)  # (B, n_fft//2+1, T)
        mel = torch.matmul(self.mel_fb, power)  # (B, F, T)
        feats = torch.log(mel + 1e-6).transpose(1, 2)  # (B, T, F)
        if lengths is None:
            lengths = torch.full((wav.shape[0],), wav.shape[1], device=wav.device, dtype=torch.long)
        return feats, self.num_frames(lengths).clamp(max=feats.shape[1])


class SpecAugment(nn.Module):
    """Frequency and time masking on ``(B, T, F)`` features while training (Park et al. 2019).

    Masked values are set to the utterance mean. Identity in eval mode.
    """

    def __init__(self, freq_masks: int = 2, freq_width: int = 8, time_masks: int = 2,
                 time_width: float = 0.05) -> None:
        super().__init__()
        self.freq_masks, self.freq_width = freq_masks, freq_width
        self.time_masks, self.time_width = time_masks, time_width

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        if not self.training or (self.freq_masks == 0 and self.time_masks == 0):
            return feats
        b, t, f = feats.shape
        out = feats.clone()
        fill = feats.mean(dim=(1, 2), keepdim=True).expand_as(feats)
        mask = torch.zeros_like(feats, dtype=torch.bool)
        tw = max(1, int(self.time_width * t)) if self.time_width < 1 else int(self.time_width)
        for i in range(b):
            for _ in range(self.freq_masks):
                w = int(torch.randint(0, self.freq_width + 1, ()))
                s = int(torch.randint(0, max(1, f - w), ()))
                mask[i, :, s:s + w] = True
            for _ in range(self.time_masks):
                w = int(torch.randint(0, tw + 1, ()))
                s = int(torch.randint(0, max(1, t - w), ()))
                mask[i, s:s + w, :] = True
        out[mask] = fill[mask]
        return out
