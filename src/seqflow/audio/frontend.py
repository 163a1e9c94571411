"""Speech front end of the ASR models: log-mel frames plus per-utterance feature normalisation.

Shared by training (:mod:`seqflow.lit.asr`, on the training device) and inference
(:mod:`seqflow.serve.transcriber`), so both see exactly the same features.
``normalize="per_feature"`` (NeMo's default) subtracts each mel bin's mean over the utterance's
valid frames and divides by its standard deviation; padded frames are set to 0. It makes the
features independent of the recording gain, which log-mel alone is not.

>>> fe = SpeechFrontend(n_mels=40)
>>> feats, n = fe(torch.zeros(2, 16000), torch.tensor([16000, 8000]))
>>> tuple(feats.shape), n.tolist()
((2, 101, 40), [101, 51])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from seqflow.audio.features import LogMel
from seqflow.errors import ConfigError

LOGMEL_KEYS = ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels", "f_min", "f_max")
FRONTEND_KEYS = LOGMEL_KEYS + ("normalize",)
NORMALIZE = ("per_feature", "none")


class SpeechFrontend(nn.Module):
    """Waveform ``(B, S)`` → normalised log-mel ``(B, T, F)`` with ``T = 1 + S // hop_length``.

    Args:
        sample_rate, n_fft, win_length, hop_length, n_mels, f_min, f_max: see :class:`LogMel`.
        normalize: ``per_feature`` (mean 0, std 1 per mel bin over each utterance's valid frames)
            or ``none`` (raw ``log(mel + 1e-6)``).

    Raises:
        ConfigError: unknown ``normalize``.
    """

    def __init__(self, sample_rate: int = 16000, n_fft: int = 512, win_length: int = 400, hop_length: int = 160,
                 n_mels: int = 80, f_min: float = 20.0, f_max: float | None = None,
                 normalize: str = "per_feature") -> None:
        super().__init__()
        if normalize not in NORMALIZE:
            raise ConfigError(f"model.features.normalize: {normalize!r} is not one of {NORMALIZE}")
        self.logmel = LogMel(sample_rate, n_fft, win_length, hop_length, n_mels, f_min, f_max)
        self.normalize = normalize
        self._config = {"sample_rate": int(sample_rate), "n_fft": int(n_fft), "win_length": int(win_length),
                        "hop_length": int(hop_length), "n_mels": int(n_mels), "f_min": float(f_min),
                        "f_max": None if f_max is None else float(f_max), "normalize": normalize}

    @classmethod
    def from_config(cls, features: Mapping[str, Any]) -> SpeechFrontend:
        """From ``cfg.model.features`` (keys outside :data:`FRONTEND_KEYS` are ignored)."""
        return cls(**{k: features[k] for k in FRONTEND_KEYS if k in features and features[k] is not None})

    def config(self) -> dict:
        """The constructor arguments as a JSON-able dict (saved with a transcriber)."""
        return dict(self._config)

    @property
    def sample_rate(self) -> int:
        return self.logmel.sample_rate

    @property
    def hop_length(self) -> int:
        return self.logmel.hop_length

    @property
    def n_mels(self) -> int:
        return self.logmel.n_mels

    @torch.no_grad()
    def forward(self, wav: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: ``wav (B, S)`` float at :attr:`sample_rate`, ``lengths (B,)`` valid samples (``None``: all).

        Returns ``(feats (B, T, F), frame_lengths (B,))``; frames ``>= frame_lengths`` are padding (0 when
        normalising).
        """
        feats, frame_lengths = self.logmel(wav, lengths)
        if self.normalize == "none":
            return feats, frame_lengths
        valid = (torch.arange(feats.shape[1], device=feats.device)[None, :] < frame_lengths[:, None])[..., None]
        n = frame_lengths.clamp(min=1).to(feats.dtype)[:, None, None]
        mean = (feats * valid).sum(1, keepdim=True) / n
        var = (((feats - mean) * valid) ** 2).sum(1, keepdim=True) / n
        return ((feats - mean) / (var.sqrt() + 1e-5)) * valid, frame_lengths

    @torch.no_grad()
    def features_each(self, wavs: Sequence[np.ndarray], device: torch.device | str = "cpu"
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of each waveform computed on its own, then zero-padded to the longest: exactly the
        features of a batch of one, whatever the other waveforms are (the STFT edge of a short waveform
        in a padded batch would otherwise see zeros instead of reflect padding).

        Args: ``wavs``: ``(S_i,)`` float waveforms. Returns ``(feats (B, T, F), frame_lengths (B,))``.
        """
        out = [self(torch.as_tensor(np.asarray(w, dtype=np.float32), device=device)[None])[0][0] for w in wavs]
        lengths = torch.tensor([f.shape[0] for f in out], dtype=torch.long, device=device)
        return nn.utils.rnn.pad_sequence(out, batch_first=True), lengths
