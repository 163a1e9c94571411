"""Push-based trigger-word detection over an unbounded 16 kHz stream, in bounded memory.

``TriggerWordDetector.stream()`` (and ``EmbeddingTriggerWordDetector.stream()``) returns a
:class:`DetectionStream`: push float32 mono samples of any size (0, 320 = 20 ms, or minutes),
get the detections decided so far. The detector's front-end context (STFT window and Conv1D
receptive field for log-mel; the 76-frame embedding window for the speech embedding) and the GRU
state are carried across pushes, so the step probabilities equal the offline
:meth:`~seqflow.serve.detector.TriggerWordDetector.scores` of the concatenated stream (to float
rounding), whatever the push sizes. Memory: the samples of one receptive field plus the current
push (a big push is processed in pieces of at most ``chunk_s`` seconds), and the GRU state.

Latency: output step ``k`` is computed as soon as every sample its receptive field needs has
arrived (log-mel: ``n_fft / 2`` = 16 ms after the step's time; embedding: 16 ms too), so a score
crossing the threshold is reported by the push that completes that step.

**Streaming vs offline detections.** A detection is emitted at its rising edge (same times and
same refractory rule as :func:`seqflow.serve.detector.detect`): ``start`` is identical, but
``end`` is the time of the latest step above threshold seen when it is emitted and ``score``
the max probability seen so far in that run. Offline ``detect()`` reports ``end`` = the first
step back below threshold (the fall) and ``score`` = the max over the whole run. The offline
form is available from a stream too: :meth:`DetectionStream.pop_completed` returns each
detection once its run has ended (or at :meth:`~DetectionStream.flush`), equal to ``detect()``'s.

>>> s = detector.stream(threshold=0.6)                                      # doctest: +SKIP
>>> for chunk in chunks_of_20_ms:                                           # doctest: +SKIP
...     for d in s.push(chunk): print(d)    # {"start": 3.07, "end": 3.07, "score": 0.71}
>>> s.flush(); s.seconds                                                    # doctest: +SKIP
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np


class StepSource(Protocol):
    """What a detector provides to stream (implemented by both detector classes)."""

    sample_rate: int
    step_s: float
    first_step_end_s: float
    refractory_s: float
    chunk_steps: int

    def stream_steps_ready(self, num_samples: int, final: bool) -> int:
        """Output steps computable from the first ``num_samples`` samples (``final``: the stream ended)."""

    def stream_first_sample(self, k: int) -> int:
        """First sample (may be < 0) that output step ``k`` or any later step depends on."""

    def stream_probs(self, buf: np.ndarray, buf0: int, num_samples: int, k0: int, k1: int, state):
        """Probabilities ``(k1 - k0,)`` of steps ``[k0, k1)`` from ``buf`` (samples ``buf0 ..``
        of a stream of ``num_samples`` samples so far) and the carried ``state``; returns
        ``(probs, new_state)``."""


class _Runs:
    """Rising-edge / refractory decisions one step at a time (the rules of ``detect()``)."""

    def __init__(self, threshold: float, refractory_s: float, step_s: float, first_step_end_s: float) -> None:
        self.threshold, self.refractory_s = float(threshold), float(refractory_s)
        self.step_s, self.t0 = float(step_s), float(first_step_end_s)
        self.prev_above = False
        self.last_start = -math.inf
        self.open: dict | None = None  # the emitted detection whose run is still above threshold
        self.completed: list[dict] = []

    def _time(self, k: int) -> float:
        return float(self.t0 + k * self.step_s)

    def feed(self, probs: np.ndarray, k0: int) -> list[dict]:
        """Steps ``k0, k0 + 1, ...`` with ``probs``; returns the detections emitted (rising edges)."""
        out: list[dict] = []
        live: dict | None = None  # the dict handed out for the open run during this call
        for i, p in enumerate(np.asarray(probs, dtype=np.float64)):
            k, above = k0 + i, bool(p >= self.threshold)
            if above and not self.prev_above:
                start = self._time(k)
                if start - self.last_start >= self.refractory_s - 1e-9:
                    self.open = {"start": start, "end": start, "score": float(p)}
                    live = dict(self.open)
                    out.append(live)
                    self.last_start = start
            elif above and self.open is not None:
                self.open["end"], self.open["score"] = self._time(k), max(self.open["score"], float(p))
                if live is not None:
                    live.update(end=self.open["end"], score=self.open["score"])
            elif not above and self.open is not None:
                self.completed.append({**self.open, "end": self._time(k)})
                self.open, live = None, None
            if not above:
                live = None
            self.prev_above = above
        return out

    def close(self) -> None:
        """End of stream: an open run ends at its last step (``detect()``'s rule)."""
        if self.open is not None:
            self.completed.append(dict(self.open))
            self.open = None


class DetectionStream:
    """One audio stream's incremental scoring and detection (see the module doc).

    Args:
        detector: a :class:`~seqflow.serve.detector.TriggerWordDetector` (either class).
        threshold: detection threshold (``None``: the detector's).

    Not thread-safe: one stream per connection.
    """

    def __init__(self, detector: StepSource, threshold: float | None = None) -> None:
        self.detector = detector
        self.threshold = float(detector.threshold if threshold is None else threshold)
        self._runs = _Runs(self.threshold, detector.refractory_s, detector.step_s, detector.first_step_end_s)
        self._buf = np.zeros(0, dtype=np.float32)
        self._buf0 = 0            # absolute index of _buf[0]
        self._n = 0               # samples consumed
        self._k = 0               # next output step to compute
        self._state = None        # carried recurrent state
        self._flushed = False
        self._piece = max(1, int(detector.chunk_steps * detector.step_s * detector.sample_rate))

    @property
    def seconds(self) -> float:
        """Audio consumed so far [s]."""
        return self._n / self.detector.sample_rate

    @property
    def buffered_samples(self) -> int:
        """Samples held for the receptive field of the next steps (bounded: the memory contract)."""
        return int(self._buf.size)

    @property
    def steps(self) -> int:
        """Output steps scored so far."""
        return self._k

    def push(self, wav: np.ndarray) -> list[dict]:
        """Consume ``wav (S,)`` float32 mono samples at 16 kHz (any ``S >= 0``).

        Returns: detections whose rising edge was decided by this push, ``[{"start", "end",
        "score"}]`` in seconds from the start of the stream (``end``/``score`` as far as seen).

        Raises:
            ValueError: not 1-D, NaN/Inf samples, or the stream was already flushed.
        """
        return self.step(wav)[1]

    def step(self, wav: np.ndarray) -> tuple[np.ndarray, list[dict]]:
        """:meth:`push` that also returns the probabilities ``(n,)`` of the steps it completed
        (steps ``steps - n .. steps - 1``)."""
        if self._flushed:
            raise ValueError("stream already flushed")
        x = np.asarray(wav, dtype=np.float32)
        if x.ndim != 1:
            raise ValueError(f"expected mono samples of shape (S,), got shape {x.shape}")
        if x.size and not np.isfinite(x).all():
            raise ValueError("samples contain NaN or Inf")
        probs, dets = [], []
        for i in range(0, x.size, self._piece):  # bounded work per piece, even for a huge push
            self._append(x[i:i + self._piece])
            p, d = self._advance(final=False)
            probs.append(p)
            dets.extend(d)
        return (np.concatenate(probs) if probs else np.zeros(0, dtype=np.float32)), dets

    def flush(self) -> list[dict]:
        """End the stream: score the last steps (the end-of-stream padding of offline scoring) and
        return their rising-edge detections. Further pushes raise ValueError."""
        return self.flush_step()[1]

    def flush_step(self) -> tuple[np.ndarray, list[dict]]:
        """:meth:`flush` that also returns the last steps' probabilities."""
        if self._flushed:
            return np.zeros(0, dtype=np.float32), []
        p, d = self._advance(final=True)
        self._runs.close()
        self._flushed = True
        self._buf = np.zeros(0, dtype=np.float32)
        return p, d

    def pop_completed(self) -> list[dict]:
        """Detections whose run has ended, with offline ``detect()`` semantics (``end`` = first
        step back below threshold, or the last step at flush; ``score`` = max over the run);
        each is returned once."""
        out, self._runs.completed = self._runs.completed, []
        return out

    def _append(self, x: np.ndarray) -> None:
        self._buf = np.concatenate([self._buf, x]) if self._buf.size else x.copy()
        self._n += x.size

    def _advance(self, final: bool) -> tuple[np.ndarray, list[dict]]:
        det = self.detector
        ready = det.stream_steps_ready(self._n, final)
        probs, dets = [], []
        while self._k < ready:
            k1 = min(ready, self._k + det.chunk_steps)
            p, self._state = det.stream_probs(self._buf, self._buf0, self._n, self._k, k1, self._state)
            probs.append(p)
            dets.extend(self._runs.feed(p, self._k))
            self._k = k1
        keep = min(self._n, max(0, det.stream_first_sample(self._k)))
        if keep > self._buf0:  # drop samples no later step needs
            self._buf = self._buf[keep - self._buf0:].copy()
            self._buf0 = keep
        return (np.concatenate(probs).astype(np.float32) if probs else np.zeros(0, dtype=np.float32)), dets
