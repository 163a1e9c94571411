"""Trigger-word evaluation on continuous audio: FRR at fixed FA/h, DET curve.

The test split's clips are concatenated into continuous streams (a few, scored as one batch:
GRU steps are sequential, so batching streams is what makes hours of audio fast) and scored once; a sweep of thresholds
turns the step scores into detections (:func:`seqflow.serve.detector.detect`). A detection is a
hit when its start falls in ``[e - tol, e + label_steps * step_s + tol]`` of a not-yet-matched
positive ending at ``e`` (each positive matched at most once), otherwise a false accept.
FRR = missed positives / positives; FA/h = false accepts / stream hours.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seqflow.serve.detector import TriggerWordDetector, detect


def concat_clips(clips: Iterable[tuple[np.ndarray, Sequence[Mapping[str, Any]]]], sample_rate: int
                 ) -> tuple[np.ndarray, np.ndarray, float]:
    """Join ``(wav (S,), segments)`` clips into one stream.

    ``segments`` are the shard json's ``[{"kind", "start", "end", ...}]`` (seconds within the clip).
    Returns ``(stream (sum S,) float32, positive_ends_s (P,) sorted, seconds)``.
    """
    wavs, ends, offset = [], [], 0
    for wav, segments in clips:
        w = np.asarray(wav, dtype=np.float32).reshape(-1)
        ends.extend(offset / sample_rate + float(s["end"]) for s in segments if s.get("kind") == "positive")
        wavs.append(w)
        offset += w.shape[0]
    stream = np.concatenate(wavs) if wavs else np.zeros(0, dtype=np.float32)
    return stream, np.sort(np.asarray(ends, dtype=np.float64)), offset / sample_rate


def count_errors(detections: Sequence[Mapping[str, float]], positive_ends_s: np.ndarray, window_s: float,
                 tolerance_s: float) -> tuple[int, int]:
    """Greedy matching in time order → ``(hits, false_accepts)``.

    A detection at ``start`` hits the earliest unmatched positive ``e`` with
    ``e - tolerance_s <= start <= e + window_s + tolerance_s``.
    """
    matched = np.zeros(len(positive_ends_s), dtype=bool)
    hits = fa = 0
    for det in detections:
        t = det["start"]
        cand = np.flatnonzero(~matched & (positive_ends_s - tolerance_s <= t)
                              & (t <= positive_ends_s + window_s + tolerance_s))
        if cand.size:
            matched[cand[0]] = True
            hits += 1
        else:
            fa += 1
    return hits, fa


def det_curve(probs: np.ndarray | Sequence[np.ndarray], step_s: float, first_step_end_s: float,
              positive_ends_s: np.ndarray | Sequence[np.ndarray], seconds: float,
              thresholds: int | Sequence[float] = 99, refractory_s: float = 1.0,
              match_tolerance_s: float = 0.5, label_steps: int = 50) -> dict[str, list[float]]:
    """FRR and FA/h for each threshold over a scored stream (or several: pass lists of
    ``probs`` and of ``positive_ends_s``, one per stream, each in its own timeline).

    ``thresholds``: a count ``n`` (evenly spaced in (0, 1): ``0.01 … 0.99`` for 99, plus 21
    log-spaced values from 0.99 to 0.9999) or explicit values. Returns ``{"thresholds": [...], "frr": [...], "fa_per_hour": [...]}`` ascending in threshold.
    """
    if isinstance(probs, np.ndarray):
        probs, positive_ends_s = [probs], [positive_ends_s]
    if isinstance(thresholds, int):  # evenly spaced, plus a fine tail up to 0.9999 where FA/h gets small
        ths = np.unique(np.concatenate([np.linspace(0.0, 1.0, thresholds + 2)[1:-1],
                                        1.0 - np.logspace(-2, -4, 21)]))
    else:
        ths = np.sort(np.asarray(thresholds, dtype=np.float64))
    hours = seconds / 3600.0
    n_pos = sum(len(e) for e in positive_ends_s)
    frr, fah = [], []
    for th in ths:
        hits = fa = 0
        for p, ends in zip(probs, positive_ends_s):
            dets = detect(p, step_s, float(th), refractory_s, first_step_end_s)
            h, f = count_errors(dets, ends, label_steps * step_s, match_tolerance_s)
            hits, fa = hits + h, fa + f
        frr.append((n_pos - hits) / n_pos if n_pos else 0.0)
        fah.append(fa / hours if hours > 0 else 0.0)
    return {"thresholds": [float(t) for t in ths], "frr": frr, "fa_per_hour": fah}


def _key(target: float) -> str:
    return f"test/frr_at_{target:g}fah"


def summarize(curve: Mapping[str, Sequence[float]], fa_per_hour_targets: Sequence[float],
              operating_fa_per_hour: float = 1.0) -> dict[str, float]:
    """Operating points from a DET curve.

    For each target: FRR at the smallest threshold with ``fa_per_hour <= target``
    (``test/frr_at_0.5fah``, ``test/frr_at_1fah``, ...); if no swept threshold qualifies, FRR 1.0
    at threshold 1.0 (nothing fires). ``test/threshold`` and ``test/fa_per_hour`` are those of
    ``operating_fa_per_hour``.
    """
    out: dict[str, float] = {}
    targets = list(fa_per_hour_targets)
    if operating_fa_per_hour not in targets:
        targets.append(operating_fa_per_hour)
    for target in targets:
        th, frr, fah = 1.0, 1.0, 0.0
        for t, r, f in zip(curve["thresholds"], curve["frr"], curve["fa_per_hour"]):
            if f <= target:
                th, frr, fah = t, r, f
                break
        if target in fa_per_hour_targets:
            out[_key(target)] = float(frr)
        if target == operating_fa_per_hour:
            out["test/threshold"], out["test/fa_per_hour"] = float(th), float(fah)
    return out


def evaluate_trigger_word(detector: TriggerWordDetector, clips: Iterable[tuple[np.ndarray, Sequence[Mapping]]],
                          thresholds: int | Sequence[float] = 99,
                          fa_per_hour_targets: Sequence[float] = (0.5, 1.0), refractory_s: float = 1.0,
                          match_tolerance_s: float = 0.5, label_steps: int = 50,
                          operating_fa_per_hour: float = 1.0, num_streams: int = 16) -> dict[str, Any]:
    """Join the test clips into ``num_streams`` continuous streams (clip ``i`` goes to stream
    ``i % num_streams``), score them once as one batch, and sweep thresholds.

    ``clips``: ``(wav (S,) at detector.sample_rate, segments)`` pairs (the shard reader's samples).
    Keyword arguments mirror ``cfg.evaluate`` (plus ``cfg.clips.label_steps``).
    Returns ``{"curve": det_curve(...), "test/frr_at_<t>fah": ..., "test/threshold": ...,
    "test/fa_per_hour": ..., "test/num_positives": P, "test/hours": h}``.
    """
    clips = list(clips)
    groups = [clips[i::num_streams] for i in range(min(num_streams, len(clips)))]
    streams = [concat_clips(g, detector.sample_rate) for g in groups]
    probs = detector.scores_many([s for s, _, _ in streams])
    ends = [e for _, e, _ in streams]
    seconds = sum(sec for _, _, sec in streams)
    curve = det_curve(probs, detector.step_s, detector.first_step_end_s, ends, seconds, thresholds,
                      refractory_s, match_tolerance_s, label_steps)
    metrics: dict[str, Any] = {"curve": curve}
    metrics.update(summarize(curve, fa_per_hour_targets, operating_fa_per_hour))
    metrics["test/num_positives"] = float(sum(len(e) for e in ends))
    metrics["test/hours"] = seconds / 3600.0
    return metrics


def plot_det(curve: Mapping[str, Sequence[float]], path: str | Path,
             operating_point: tuple[float, float] | None = None, title: str | None = None) -> Path:
    """DET curve PNG: FRR [%] against false accepts per hour; ``operating_point = (fa_per_hour, frr)``
    is marked. Returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fah = np.asarray(curve["fa_per_hour"], dtype=float)
    frr = 100.0 * np.asarray(curve["frr"], dtype=float)
    fig, ax = plt.subplots(figsize=(5.5, 4.2), dpi=110)
    ax.plot(fah, frr, marker=".", lw=1.2, label="threshold sweep")
    if operating_point is not None:
        ax.plot([operating_point[0]], [100.0 * operating_point[1]], "o", color="tab:red", ms=8,
                label=f"operating point ({operating_point[0]:.2g} FA/h, FRR {100 * operating_point[1]:.1f} %)")
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel("false accepts per hour [FA/h]")
    ax.set_ylabel("false reject rate, FRR [%]")
    ax.set_ylim(-2, 102)
    ax.set_title(title or "Trigger-word DET curve (test stream)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
