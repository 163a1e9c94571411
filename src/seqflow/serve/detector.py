"""Streaming trigger-word detection: step scores over long audio, threshold + refractory period.

Timing convention (``seqflow.shards.labels.step_to_seconds``): output step ``k`` covers feature
frames ``k*stride … k*stride + kernel - 1``; its time is the END of that receptive field,
``t_k = (k*stride + kernel - 1) * hop / sample_rate`` seconds (frame ``j`` is centred at
``j*hop``). Labels switch to 1 at the first step whose receptive field ends after the trigger
word, so a detection's ``start`` (the first step above threshold) estimates when the trigger word
ended; ``end`` is when the score falls back below the threshold.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seqflow.audio.features import LogMel
from seqflow.errors import ConfigError, SeqflowError
from seqflow.models.trigger_word import TriggerWordNet
from seqflow.serve.detection_stream import DetectionStream
from seqflow.shards.labels import step_seconds, step_to_seconds

DEFAULT_FAMILY = "seqflow.families.trigger_word"
WEIGHTS_NAME = "weights.pt"
CONFIG_NAME = "detector.json"
_LOGMEL_KEYS = ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels", "f_min", "f_max")
_NET_KEYS = ("conv_channels", "conv_kernel", "conv_stride", "gru_hidden", "gru_layers", "dropout")


def detect(probs: np.ndarray, step_s: float, threshold: float, refractory_s: float,
           first_step_end_s: float = 0.0) -> list[dict]:
    """Detections from step probabilities by rising edges with a refractory period.

    Args:
        probs: ``(T',)`` trigger-word probability per output step.
        step_s: seconds between output steps (``stride * hop / sample_rate``).
        threshold: a detection starts where ``probs >= threshold`` after a step below it
            (or at step 0).
        refractory_s: a rising edge less than this many seconds after the previous detection's
            start is ignored (one trigger word gives one detection).
        first_step_end_s: time of step 0 in seconds (end of its receptive field, plus any stream
            offset); step ``k`` is at ``first_step_end_s + k * step_s``.

    Returns:
        ``[{"start": s, "end": s, "score": max prob in the run}, ...]`` in time order; ``end`` is
        the time of the first step back below threshold (the last step's time if it never falls).
    """
    probs = np.asarray(probs, dtype=np.float64).reshape(-1)
    if probs.size == 0:
        return []
    above = probs >= threshold
    edges = np.flatnonzero(above & ~np.concatenate(([False], above[:-1])))
    falls = np.flatnonzero(~above & np.concatenate(([False], above[:-1])))
    out: list[dict] = []
    last_start = -math.inf
    for k in edges:
        start = first_step_end_s + k * step_s
        if start - last_start < refractory_s - 1e-9:
            continue
        i = np.searchsorted(falls, k)
        k_end = int(falls[i]) if i < falls.size else probs.size - 1
        run = probs[k:falls[i]] if i < falls.size else probs[k:]
        out.append({"start": float(start), "end": float(first_step_end_s + k_end * step_s),
                    "score": float(run.max())})
        last_start = start
    return out


class TriggerWordDetector:
    """Scores and detections for a mono waveform of any length, chunk by chunk.

    Log-mel and the network run on chunks of ``chunk_s`` seconds of output steps; each chunk's
    log-mel input overlaps its neighbours by the STFT window and its Conv1D input by
    ``kernel - stride`` frames, and the GRU state is carried across chunks, so the scores equal
    a single whole-stream pass (up to float rounding) while memory stays bounded.

    Args:
        net: a :class:`TriggerWordNet` (put in eval mode here). logmel: its :class:`LogMel`.
        threshold: default detection threshold. refractory_s: see :func:`detect`.
        chunk_s: seconds of audio per chunk.
    """

    def __init__(self, net: TriggerWordNet, logmel: LogMel, threshold: float = 0.5, refractory_s: float = 1.0,
                 chunk_s: float = 60.0) -> None:
        self.net, self.logmel = net.eval(), logmel.eval()
        self.threshold, self.refractory_s = float(threshold), float(refractory_s)
        self.sample_rate, self.hop_length = int(logmel.sample_rate), int(logmel.hop_length)
        self.conv_kernel, self.conv_stride = int(net.conv_kernel), int(net.conv_stride)
        self.step_s = step_seconds(self.sample_rate, self.hop_length, self.conv_stride)
        self.first_step_end_s = step_to_seconds(0, self.sample_rate, self.hop_length, self.conv_kernel,
                                                self.conv_stride)
        self.chunk_steps = max(1, int(chunk_s / self.step_s))
        self._margin = -(-(logmel.n_fft // 2) // self.hop_length)  # frames of STFT context

    def _logmel_frames(self, wav: torch.Tensor, f0: int, f1: int) -> torch.Tensor:
        """Log-mel frames ``[f0, f1)`` of the whole streams ``wav (B, S)`` → ``(B, f1 - f0, F)``."""
        n = wav.shape[-1]
        a = max(0, f0 - self._margin) * self.hop_length
        b = min(n, (f1 - 1 + self._margin) * self.hop_length)
        feats, _ = self.logmel(wav[:, a:b])
        i0 = f0 - a // self.hop_length
        return feats[:, i0:i0 + (f1 - f0)]

    @torch.no_grad()
    def scores_many(self, wavs: list[np.ndarray]) -> list[np.ndarray]:
        """Score several streams in one batch (GRU steps are sequential; batching them is what
        makes hours of audio fast on a CPU). Shorter streams are zero-padded at the end, which
        can only change their last one or two steps' STFT edge, never earlier scores.

        Returns: ``probs (T'_i,)`` float32 for each stream.
        """
        xs = [np.asarray(w, dtype=np.float32).reshape(-1) for w in wavs]
        longest = max((len(x) for x in xs), default=0)
        x = torch.zeros(len(xs), longest)
        for i, w in enumerate(xs):
            x[i, :len(w)] = torch.from_numpy(w)
        totals = [self.net.num_steps(1 + len(w) // self.hop_length) for w in xs]
        total = max(totals, default=0)
        probs = np.zeros((len(xs), total), dtype=np.float32)
        h = None
        for k0 in range(0, total, self.chunk_steps):
            k1 = min(total, k0 + self.chunk_steps)
            feats = self._logmel_frames(x, k0 * self.conv_stride, (k1 - 1) * self.conv_stride + self.conv_kernel)
            logits, h = self.net(feats, h)
            probs[:, k0:k1] = torch.sigmoid(logits).numpy()
        return [probs[i, :t] for i, t in enumerate(totals)]

    def scores(self, wav: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Args: ``wav (S,)`` mono float waveform at ``sample_rate``.

        Returns: ``(probs (T',), step_times_s (T',))`` float32/float64; ``T' = output_steps(S)``
        (empty when the audio is shorter than the receptive field).
        """
        probs = self.scores_many([wav])[0]
        times = step_to_seconds(np.arange(len(probs)), self.sample_rate, self.hop_length, self.conv_kernel,
                                self.conv_stride)
        return probs, np.asarray(times, dtype=np.float64)

    def detect(self, wav: np.ndarray, threshold: float | None = None) -> list[dict]:
        """Detections ``[{"start", "end", "score"}]`` (seconds from the start of ``wav``)."""
        probs, _ = self.scores(wav)
        return detect(probs, self.step_s, self.threshold if threshold is None else threshold,
                      self.refractory_s, self.first_step_end_s)

    def stream(self, threshold: float | None = None) -> DetectionStream:
        """A push-based stream over this detector (``push(wav) -> detections``, ``flush()``,
        ``seconds``); its step probabilities equal :meth:`scores` of the concatenated pushes.
        See :mod:`seqflow.serve.detection_stream` for the streaming ``end``/``score`` semantics.

        Args: threshold: detection threshold (``None``: :attr:`threshold`).
        """
        return DetectionStream(self, threshold)

    # -- hooks of DetectionStream: which steps the samples so far determine, and their scores --

    def stream_steps_ready(self, num_samples: int, final: bool) -> int:
        """Output steps determined by the first ``num_samples`` samples: every log-mel frame of
        their receptive field is complete (frame ``f`` needs samples up to ``f*hop + n_fft/2``);
        at the end of the stream (``final``) all :meth:`scores` steps (reflect-padded edge)."""
        total = self.net.num_steps(1 + num_samples // self.hop_length)
        half = self.logmel.n_fft // 2
        if final:
            return total
        if num_samples <= half:
            return 0
        return min(total, self.net.num_steps((num_samples - half) // self.hop_length + 1))

    def stream_first_sample(self, k: int) -> int:
        """First sample that steps ``>= k`` depend on (their STFT context)."""
        return max(0, k * self.conv_stride - self._margin) * self.hop_length

    @torch.no_grad()
    def stream_probs(self, buf: np.ndarray, buf0: int, num_samples: int, k0: int, k1: int,
                     h: torch.Tensor | None) -> tuple[np.ndarray, torch.Tensor]:
        """Probabilities ``(k1 - k0,)`` of steps ``[k0, k1)`` from the buffered samples ``buf``
        (stream samples ``buf0 ..``; ``num_samples`` so far) and GRU state ``h``; returns
        ``(probs, h_n)``. Same slicing as :meth:`scores_many`, so the same numbers."""
        f0, f1 = k0 * self.conv_stride, (k1 - 1) * self.conv_stride + self.conv_kernel
        a = max(0, f0 - self._margin) * self.hop_length
        b = min(num_samples, (f1 - 1 + self._margin) * self.hop_length)
        feats, _ = self.logmel(torch.from_numpy(np.ascontiguousarray(buf[a - buf0:b - buf0]))[None])
        i0 = f0 - a // self.hop_length
        logits, h = self.net(feats[:, i0:i0 + (f1 - f0)], h)
        return torch.sigmoid(logits)[0].numpy(), h


def _model_parts(model_cfg: Mapping[str, Any]) -> tuple[dict, dict]:
    feats = model_cfg.get("features", {})
    net = model_cfg.get("net", {})
    return ({k: feats[k] for k in _LOGMEL_KEYS if k in feats}, {k: net[k] for k in _NET_KEYS if k in net})


def save_detector(directory: str | Path, net: TriggerWordNet, model_cfg: Mapping[str, Any], threshold: float,
                  refractory_s: float) -> Path:
    """Write ``weights.pt`` (the net's ``state_dict``) and ``detector.json`` (features, net,
    threshold, refractory_s, step timing) into ``directory``; returns the directory.

    ``model_cfg`` is ``cfg.model`` as a plain dict (needs ``features`` and ``net``).
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    features, net_kw = _model_parts(model_cfg)
    features.setdefault("n_mels", net.n_mels)
    meta = {"format": 1, "model": "trigger_word", "features": features, "net": net_kw,
            "threshold": float(threshold), "refractory_s": float(refractory_s)}
    family = model_cfg.get("family")
    if family and family != DEFAULT_FAMILY:  # another trigger-word family: rebuilt by its own build_net
        meta.update(family=str(family), model_cfg=dict(model_cfg))
    torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, d / WEIGHTS_NAME)
    tmp = d / (CONFIG_NAME + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    tmp.replace(d / CONFIG_NAME)
    return d


def load_detector(directory: str | Path, chunk_s: float = 60.0) -> TriggerWordDetector:
    """Rebuild a :class:`TriggerWordDetector` from :func:`save_detector`'s files (CPU tensors).

    A detector saved from a trigger-word family other than the built-in one records ``family``
    and its model config; its net is rebuilt by that family's ``build_net`` (so the family's
    module must be importable where the detector is loaded). Weights load with
    ``weights_only=True``.

    Raises:
        SeqflowError: ``detector.json`` or ``weights.pt`` missing or unreadable (names the file).
        ConfigError: ``detector.json`` is not a trigger-word detector or lacks a key.
    """
    d = Path(directory)
    cfg_path, w_path = d / CONFIG_NAME, d / WEIGHTS_NAME
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise SeqflowError(f"{p}: missing (not a saved trigger-word detector)")
    try:
        meta = json.loads(cfg_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SeqflowError(f"{cfg_path}: unreadable ({exc})") from exc
    if meta.get("model") != "trigger_word" or "features" not in meta or "net" not in meta:
        raise ConfigError(f"{cfg_path}: not a trigger-word detector config")
    logmel = LogMel(**meta["features"])
    if meta.get("family"):  # a trigger-word family declared elsewhere builds its own net
        from omegaconf import OmegaConf

        from seqflow.families import get_family

        cfg = OmegaConf.create({"model": meta["model_cfg"]})
        net = get_family(cfg).build_net(cfg, None)
    else:
        net = TriggerWordNet(n_mels=logmel.n_mels, **meta["net"])
    try:
        state = torch.load(w_path, map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    except Exception as exc:  # torch raises several types for a corrupt or mismatched file
        raise SeqflowError(f"{w_path}: cannot load weights ({exc})") from exc
    return TriggerWordDetector(net, logmel, threshold=meta.get("threshold", 0.5),
                               refractory_s=meta.get("refractory_s", 1.0), chunk_s=chunk_s)
