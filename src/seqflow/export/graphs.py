"""The modules that are traced into ONNX: waveform in, step probabilities or CTC log-probs out.

Every graph takes audio that the runtime has already **padded** (the one thing kept out of the
graph, because the padding depends on where a chunk sits in the stream): feature frame ``j`` of a
graph input covers samples ``[j * hop, j * hop + n_fft)``, so a graph input of ``N`` samples has
``(N - n_fft) // hop + 1`` frames. Padding a whole stream by ``n_fft // 2`` on each side
(``reflect`` for the log-mel models, as ``torch.stft(center=True)`` does; zeros for the speech
embedding) gives exactly the centred frames of the PyTorch front ends, ``1 + S // hop`` for ``S``
samples; a slice of the padded stream gives the frames of a chunk (see
:mod:`seqflow.export.onnx_runtime`).

* :class:`DetectorGraph` — ``audio (B, N)``, ``h0 (L, B, H)`` → ``probs (B, K)``, ``h_n (L, B, H)``:
  front end (log-mel, or the speech-embedding mel + CNN) → the trained
  head (Conv1D/GRU or GRU) → sigmoid. ``K = (frames - kernel) // stride + 1`` output steps.
* :class:`CTCGraph` — ``audio (B, N)`` (each utterance reflect-padded on its own, then zero-padded
  to the longest), ``lengths (B,)`` int64 samples before padding → ``log_probs (B, T', V)``,
  ``out_lengths (B,)``: log-mel → per-utterance normalisation over valid frames → conv subsampling
  → Transformer encoder → CTC head → log_softmax.

The log-mel STFT runs as a convolution with a fixed DFT basis (:class:`UncentredLogMel`).
``torch.stft`` itself does export (as ONNX ``STFT``, opset >= 17, only with
``return_complex=False``: the TorchScript exporter rejects complex outputs), but onnxruntime's
``STFT`` kernel took about half of the log-mel detector's time.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from seqflow.audio.features import LogMel
from seqflow.audio.frontend import SpeechFrontend
from seqflow.models.speech_embedding import SpeechEmbeddingFrontEnd


class UncentredLogMel(nn.Module):
    """``audio (B, N)`` → ``log(mel power + 1e-6)`` frames ``(B, (N - n_fft) // hop + 1, F)``: the
    :class:`~seqflow.audio.features.LogMel` computation on frames that start at ``j * hop`` (the
    caller pads; with ``n_fft // 2`` reflect padding on each side this equals ``LogMel``).

    The STFT is a ``Conv1d`` with a fixed windowed-DFT basis (``2 (n_fft // 2 + 1)`` filters of
    ``win_length`` taps, stride ``hop``) instead of ONNX ``STFT``: the same numbers as
    ``torch.stft`` (tested to float rounding) at about a third of onnxruntime's ``STFT`` time, and
    the window's zero padding to ``n_fft`` is skipped rather than multiplied.
    """

    def __init__(self, logmel: LogMel) -> None:
        super().__init__()
        self.n_fft, self.hop_length, self.win_length = int(logmel.n_fft), int(logmel.hop_length), int(logmel.win_length)
        self.offset = (self.n_fft - self.win_length) // 2  # torch.stft centres a shorter window in the frame
        bins = self.n_fft // 2 + 1
        n = torch.arange(self.win_length, dtype=torch.float64) + self.offset
        angle = 2 * math.pi * torch.arange(bins, dtype=torch.float64)[:, None] * n[None, :] / self.n_fft
        window = logmel.window.detach().double()[None, :]
        basis = torch.cat([torch.cos(angle) * window, -torch.sin(angle) * window])  # (2 * bins, win_length)
        self.register_buffer("basis", basis.float()[:, None, :])
        self.register_buffer("mel_fb", logmel.mel_fb.detach().clone())
        self.bins = bins

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        tail = self.n_fft - self.offset - self.win_length
        x = audio[:, self.offset:audio.shape[1] - tail] if tail else audio[:, self.offset:]
        spec = F.conv1d(x[:, None, :], self.basis, stride=self.hop_length)  # (B, 2 * bins, T)
        power = spec[:, :self.bins].pow(2) + spec[:, self.bins:].pow(2)
        return torch.log(torch.matmul(self.mel_fb, power) + 1e-6).transpose(1, 2)  # (B, T, F)


class DetectorGraph(nn.Module):
    """Trigger-word detector as one graph: padded ``audio (B, N)`` + GRU state → probabilities + state.

    Args:
        net: the trained head, ``net(features (B, T, F), h0) -> (logits (B, K), h_n)`` (eval mode).
        front_end: a :class:`~seqflow.audio.features.LogMel` (log-mel model) or a
            :class:`~seqflow.models.speech_embedding.SpeechEmbeddingFrontEnd` (embedding model).
    """

    def __init__(self, net: nn.Module, front_end: nn.Module) -> None:
        super().__init__()
        self.net = net.eval()
        if isinstance(front_end, SpeechEmbeddingFrontEnd):
            self.front_end, self.embedding = front_end.eval(), True
        elif isinstance(front_end, LogMel):
            self.front_end, self.embedding = UncentredLogMel(front_end), False
        else:
            raise TypeError(f"unsupported trigger-word front end {type(front_end).__name__}")

    def forward(self, audio: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.embedding:  # the port's own computation on an already padded piece
            feats = self.front_end.embed(self.front_end.mel(audio, pad=(0, 0)))
        else:
            feats = self.front_end(audio)
        logits, h_n = self.net(feats, h0)
        return torch.sigmoid(logits), h_n


class CTCGraph(nn.Module):
    """CTC recognizer as one graph: front end + encoder + CTC head (greedy/beam decoding stays outside).

    Args:
        net: a :class:`~seqflow.models.ctc.CTCModel` (eval mode). frontend: its
            :class:`~seqflow.audio.frontend.SpeechFrontend`.
    """

    def __init__(self, net: nn.Module, frontend: SpeechFrontend) -> None:
        super().__init__()
        self.net = net.eval()
        self.logmel = UncentredLogMel(frontend.logmel)
        self.normalize = frontend.normalize == "per_feature"
        self.hop_length = int(frontend.hop_length)

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.logmel(audio)  # (B, T, F)
        frame_lengths = torch.clamp(1 + torch.div(lengths, self.hop_length, rounding_mode="floor"),
                                    max=feats.shape[1])
        if self.normalize:  # SpeechFrontend's per_feature normalisation, over each utterance's valid frames
            valid = (torch.arange(feats.shape[1])[None, :] < frame_lengths[:, None])[..., None]
            valid = valid.to(feats.dtype)
            n = frame_lengths.clamp(min=1).to(feats.dtype)[:, None, None]
            mean = (feats * valid).sum(1, keepdim=True) / n
            var = (((feats - mean) * valid) ** 2).sum(1, keepdim=True) / n
            feats = ((feats - mean) / (var.sqrt() + 1e-5)) * valid
        return self.net(feats, frame_lengths)


__all__ = ["UncentredLogMel", "DetectorGraph", "CTCGraph"]
