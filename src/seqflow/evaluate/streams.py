"""Continuous streams for trigger-word evaluation: join clips, score them once, count outcomes.

Clips (the shard reader's ``(wav, segments)``) are joined into a few continuous streams and
scored as one batch (GRU steps are sequential; batching streams is what makes hours of audio
fast on a CPU). The scores are kept, so a threshold sweep, a val calibration and the test
measurement at a fixed threshold all reuse one forward pass.

Outcome rules at one threshold (:func:`count_outcomes`):

* a detection whose ``start`` lies in ``[e - tol, e + window_s + tol]`` of a not-yet-matched
  positive ending at ``e`` is a **hit** (each positive matched at most once, earliest first);
  any other detection is a **false accept**;
* a sound-alike negative (segment flag ``confusable``) **fires** when a false accept starts in
  its region ``[start, end + window_s + tol]``; each occurrence counts at most once, and a false
  accept in such a region is a **sound-alike false accept**;
* ``fa_per_hour`` counts the *other* false accepts per hour of **negative audio**: the stream's
  time minus every positive's ``[start - tol, e + window_s + tol]`` (where a detection would be
  a hit) and minus every sound-alike region. The synthetic streams insert a sound-alike about
  once per clip, a density no real audio has, so their false accepts are reported as a rate per
  occurrence (``confusable_trigger_rate``), not per hour; ``fa_per_hour_all`` counts every false
  accept per hour of the time outside positives, for comparison.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from seqflow.serve.detector import TriggerWordDetector, detect


@dataclass
class ScoredStreams:
    """Step probabilities of continuous streams plus what lies where in them.

    probs: ``(T'_i,)`` float32 per stream. positives / confusables: ``(N_i, 2)`` float64
    ``[start, end]`` seconds per stream, sorted by start. seconds: total stream time [s].
    step_s / first_step_end_s: the detector's output-step timing (see ``serve.detector``).
    """

    probs: list[np.ndarray]
    positives: list[np.ndarray]
    confusables: list[np.ndarray]
    seconds: float
    step_s: float
    first_step_end_s: float

    @property
    def num_positives(self) -> int:
        return int(sum(len(p) for p in self.positives))

    @property
    def num_confusables(self) -> int:
        return int(sum(len(c) for c in self.confusables))


def _intervals(rows: list[tuple[float, float]]) -> np.ndarray:
    return np.asarray(sorted(rows), dtype=np.float64).reshape(-1, 2)


def concat_clips(clips: Iterable[tuple[np.ndarray, Sequence[Mapping[str, Any]]]], sample_rate: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Join ``(wav (S,), segments)`` clips into one stream.

    ``segments``: the shard json's ``[{"kind", "start", "end", "confusable"?, ...}]`` (seconds
    within the clip). Returns ``(stream (sum S,) float32, positives (P, 2), confusables (C, 2),
    seconds)`` with interval times in the stream's timeline.
    """
    wavs, pos, conf, offset = [], [], [], 0
    for wav, segments in clips:
        w = np.asarray(wav, dtype=np.float32).reshape(-1)
        t0 = offset / sample_rate
        for s in segments:
            span = (t0 + float(s["start"]), t0 + float(s["end"]))
            if s.get("kind") == "positive":
                pos.append(span)
            elif s.get("kind") == "negative" and s.get("confusable"):
                conf.append(span)
        wavs.append(w)
        offset += w.shape[0]
    stream = np.concatenate(wavs) if wavs else np.zeros(0, dtype=np.float32)
    return stream, _intervals(pos), _intervals(conf), offset / sample_rate


def score_clip_streams(detector: TriggerWordDetector, clips: Iterable[tuple[np.ndarray, Sequence[Mapping]]],
                       num_streams: int = 16) -> ScoredStreams:
    """Join clips into ``num_streams`` streams (clip ``i`` → stream ``i % num_streams``) and score
    them in one batch. ``clips``: ``(wav (S,) at detector.sample_rate, segments)`` pairs."""
    clips = list(clips)
    groups = [clips[i::num_streams] for i in range(min(num_streams, len(clips)))]
    joined = [concat_clips(g, detector.sample_rate) for g in groups]
    probs = detector.scores_many([s for s, _, _, _ in joined]) if joined else []
    return ScoredStreams(probs=probs, positives=[p for _, p, _, _ in joined],
                         confusables=[c for _, _, c, _ in joined], seconds=float(sum(j[3] for j in joined)),
                         step_s=detector.step_s, first_step_end_s=detector.first_step_end_s)


def score_stream(detector: TriggerWordDetector, wav: np.ndarray) -> ScoredStreams:
    """One stream with no positives (e.g. real speech in other languages, real noise)."""
    w = np.asarray(wav, dtype=np.float32).reshape(-1)
    empty = np.zeros((0, 2), dtype=np.float64)
    return ScoredStreams(probs=detector.scores_many([w]), positives=[empty], confusables=[empty],
                         seconds=len(w) / detector.sample_rate, step_s=detector.step_s,
                         first_step_end_s=detector.first_step_end_s)


def _covered(regions: np.ndarray) -> float:
    """Length of the union of ``(N, 2)`` intervals [s]."""
    covered, last = 0.0, -np.inf
    for a, b in regions[np.argsort(regions[:, 0], kind="stable")]:
        a = max(a, last)
        if b > a:
            covered += b - a
        last = max(last, b)
    return covered


def negative_seconds(scored: ScoredStreams, window_s: float, tolerance_s: float,
                     exclude_confusables: bool = False) -> float:
    """Stream time outside every positive's hit region ``[start - tol, end + window_s + tol]``
    and, with ``exclude_confusables``, outside every sound-alike region ``[start, end + window_s
    + tol]`` (overlapping regions counted once) [s]."""
    covered = 0.0
    for pos, conf in zip(scored.positives, scored.confusables):
        regions = [np.column_stack([pos[:, 0] - tolerance_s, pos[:, 1] + window_s + tolerance_s])] if len(pos) else []
        if exclude_confusables and len(conf):
            regions.append(np.column_stack([conf[:, 0], conf[:, 1] + window_s + tolerance_s]))
        if regions:
            covered += _covered(np.concatenate(regions))
    return max(scored.seconds - covered, 0.0)


def count_outcomes(scored: ScoredStreams, threshold: float, refractory_s: float, window_s: float,
                   tolerance_s: float) -> dict[str, int]:
    """Detections at ``threshold`` matched against the streams (rules in the module docstring).

    Returns ``{"positives", "hits", "false_accepts" (all), "confusable_false_accepts" (those in a
    sound-alike region), "confusables", "confusable_triggers", "detections"}`` (counts).
    """
    out = dict(positives=0, hits=0, false_accepts=0, confusable_false_accepts=0, confusables=0,
               confusable_triggers=0, detections=0)
    for probs, pos, conf in zip(scored.probs, scored.positives, scored.confusables):
        dets = detect(probs, scored.step_s, float(threshold), refractory_s, scored.first_step_end_s)
        ends = pos[:, 1] if len(pos) else np.zeros(0)
        matched = np.zeros(len(ends), dtype=bool)
        fired = np.zeros(len(conf), dtype=bool)
        for det in dets:
            t = det["start"]
            cand = np.flatnonzero(~matched & (ends - tolerance_s <= t) & (t <= ends + window_s + tolerance_s))
            if cand.size:
                matched[cand[0]] = True
                continue
            out["false_accepts"] += 1
            in_conf = ((conf[:, 0] <= t) & (t <= conf[:, 1] + window_s + tolerance_s)) if len(conf) \
                else np.zeros(0, dtype=bool)
            out["confusable_false_accepts"] += bool(in_conf.any())
            hit_conf = np.flatnonzero(~fired & in_conf)
            if hit_conf.size:
                fired[hit_conf[0]] = True
        out["positives"] += len(ends)
        out["hits"] += int(matched.sum())
        out["confusables"] += len(conf)
        out["confusable_triggers"] += int(fired.sum())
        out["detections"] += len(dets)
    return out
