"""Optional voice-activity gate before the trigger-word model (``serve.vad``): silero-vad 6.2.3.

Method: a detection's ``start`` marks where the trigger word ended (the first output step whose
receptive field covers the whole word, see :mod:`seqflow.serve.detector`), so the word itself lies
in the ``lookback_s`` seconds before it. For each detection, silero-vad (its ONNX model, shipped
inside the wheel, run on onnxruntime with one thread) scores the audio
``[start - lookback_s - warmup_s, start]`` from a fresh state in 32-ms chunks (512 samples at
16 kHz); the first ``warmup_s`` only settles the VAD's LSTM state. The detection is kept when the
highest speech probability of the chunks inside ``[start - lookback_s, start]`` reaches
``threshold``; otherwise it is dropped. The VAD thus runs only around detections (a few ms each),
never over the whole stream, and the same rule serves REST (the request's audio) and streams (a
ring buffer of the last :data:`RING_S` seconds).

>>> gate = VadGate(threshold=0.5, lookback_s=1.5, warmup_s=0.5)
>>> kept = gate.filter(wav, detections)          # wav (S,) float32 at 16 kHz; detections [{"start", ...}]
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

SAMPLE_RATE = 16000
CHUNK = 512          # silero-vad's window at 16 kHz (32 ms)
RING_S = 10.0        # seconds of stream audio kept for the gate (bounded memory per stream)


class VadGate:
    """Keep trigger-word detections only where silero-vad hears speech just before them.

    Args:
        threshold: speech probability in [0, 1] a chunk must reach.
        lookback_s: seconds before a detection's ``start`` searched for speech.
        warmup_s: extra seconds before that window run through the VAD only to settle its state.
    Thread-safe (one onnxruntime session behind a lock).
    """

    def __init__(self, threshold: float = 0.5, lookback_s: float = 1.5, warmup_s: float = 0.5) -> None:
        from silero_vad import load_silero_vad

        self.threshold, self.lookback_s, self.warmup_s = float(threshold), float(lookback_s), float(warmup_s)
        self._model = load_silero_vad(onnx=True)
        self._lock = threading.Lock()

    def speech_probs(self, windows: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Speech probability per 32-ms chunk of each window (16 kHz float32 ``(S_i,)``), each from a
        fresh state, scored as one batch → ``(ceil(S_i / 512),)`` float32 each."""
        import torch

        if not windows:
            return []
        n = [max(1, -(-len(w) // CHUNK)) for w in windows]
        x = np.zeros((len(windows), max(n) * CHUNK), dtype=np.float32)
        for i, w in enumerate(windows):
            x[i, :len(w)] = w
        with self._lock, torch.no_grad():
            probs = self._model.audio_forward(torch.from_numpy(x), SAMPLE_RATE).numpy()
        return [probs[i, :k].astype(np.float32) for i, k in enumerate(n)]

    def judge(self, wav: np.ndarray, detections: Sequence[dict], offset_s: float = 0.0) -> list[float]:
        """Highest speech probability in the look-back window of each detection.

        Args:
            wav: ``(S,)`` float32 at 16 kHz whose first sample is at ``offset_s`` seconds in the
                detections' timeline. Windows reaching before ``wav`` are cut at its start.
        Returns:
            ``[max_prob]`` per detection (0.0 when the window holds no audio).
        """
        windows, skip = [], []
        for d in detections:
            end = int(round((float(d["start"]) - offset_s) * SAMPLE_RATE))
            end = min(max(end, 0), len(wav))
            look0 = max(0, end - int(self.lookback_s * SAMPLE_RATE))
            warm0 = max(0, look0 - int(self.warmup_s * SAMPLE_RATE))
            windows.append(np.asarray(wav[warm0:end], dtype=np.float32))
            skip.append((look0 - warm0) // CHUNK)
        out = []
        for w, k, p in zip(windows, skip, self.speech_probs(windows)):
            p = p[k:] if k < p.size else p[-1:]
            out.append(float(p.max()) if len(w) and p.size else 0.0)
        return out

    def filter(self, wav: np.ndarray, detections: Sequence[dict], offset_s: float = 0.0,
               counter=None) -> list[dict]:
        """The detections :meth:`judge` finds speech before (``counter``: optional Prometheus counter
        with an ``outcome`` label, counted ``kept`` / ``dropped``)."""
        if not detections:
            return []
        kept = []
        for d, p in zip(detections, self.judge(wav, detections, offset_s)):
            ok = p >= self.threshold
            if counter is not None:
                counter.labels("kept" if ok else "dropped").inc()
            if ok:
                kept.append({**d, "vad_speech_prob": round(p, 4)})
        return kept


class StreamRing:
    """The last ``seconds`` of a stream's samples and the absolute index of the first one, so the
    gate can look back from a detection in a stream of any length with bounded memory."""

    def __init__(self, seconds: float = RING_S, sample_rate: int = SAMPLE_RATE) -> None:
        self.capacity = int(seconds * sample_rate)
        self.sample_rate = sample_rate
        self._buf = np.zeros(0, dtype=np.float32)
        self.start_sample = 0  # absolute index of self._buf[0]

    def push(self, samples: np.ndarray) -> None:
        """Append ``(n,)`` float32 samples, dropping the oldest beyond capacity."""
        buf = np.concatenate([self._buf, np.asarray(samples, dtype=np.float32)])
        drop = max(0, len(buf) - self.capacity)
        self._buf, self.start_sample = buf[drop:], self.start_sample + drop

    @property
    def samples(self) -> np.ndarray:
        """The kept samples ``(<= capacity,)``; the first is at ``offset_s`` seconds."""
        return self._buf

    @property
    def offset_s(self) -> float:
        return self.start_sample / self.sample_rate
