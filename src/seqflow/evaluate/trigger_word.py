"""Trigger-word evaluation on continuous audio: a DET sweep, a threshold calibrated on **val**,
and the test split measured at that fixed threshold.

Choose on validation, report on test: :func:`calibrate` picks the operating threshold from the
val stream's curve only (the lowest threshold whose false accepts per hour of negative audio is
at most ``target_fa_per_hour`` and whose sound-alike trigger rate is at most
``max_confusable_trigger_rate``); :func:`measure` then applies that threshold unchanged to the
test stream. The test DET sweep stays a curve; its points ``test/frr_at_<t>fah`` are sweep
points (the threshold there is read off the test curve itself), reported for comparison, never
used to pick anything. Matching rules: :mod:`seqflow.evaluate.streams`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seqflow.evaluate.streams import ScoredStreams, count_outcomes, negative_seconds


@dataclass(frozen=True)
class Matching:
    """How detections are matched: ``refractory_s`` between detections, hit ``window_s`` after a
    positive ends (= ``clips.label_seconds``), ``tolerance_s`` either side (``cfg.evaluate``)."""

    refractory_s: float = 2.0
    window_s: float = 2.0
    tolerance_s: float = 0.5


def sweep_thresholds(n: int | Sequence[float] = 99) -> np.ndarray:
    """``n`` evenly spaced thresholds in (0, 1) plus 41 log-spaced ones from 0.99 to 0.999999
    (where false accepts per hour get small: confident models saturate near 1), ascending; or the
    explicit values given."""
    if isinstance(n, int):
        return np.unique(np.concatenate([np.linspace(0.0, 1.0, n + 2)[1:-1], 1.0 - np.logspace(-2, -6, 41)]))
    return np.sort(np.asarray(n, dtype=np.float64))


def det_curve(scored: ScoredStreams, match: Matching, thresholds: int | Sequence[float] = 99
              ) -> dict[str, list[float]]:
    """FRR, false accepts per hour and sound-alike trigger rate for each threshold.

    Returns ``{"thresholds", "frr", "fa_per_hour" (false accepts off sound-alikes per hour of
    negative audio outside them), "fa_per_hour_all" (every false accept per hour outside
    positives), "confusable_trigger_rate", "false_accepts" (all)}``, ascending in threshold
    (definitions: :mod:`seqflow.evaluate.streams`). FRR and the sound-alike rate are 0 when the
    streams hold none; FA/h is 0 when they hold no negative time.
    """
    neg_h = negative_seconds(scored, match.window_s, match.tolerance_s, exclude_confusables=True) / 3600.0
    all_h = negative_seconds(scored, match.window_s, match.tolerance_s) / 3600.0
    keys = ("thresholds", "frr", "fa_per_hour", "fa_per_hour_all", "confusable_trigger_rate", "false_accepts")
    curve: dict[str, list[float]] = {k: [] for k in keys}
    for th in sweep_thresholds(thresholds):
        c = count_outcomes(scored, float(th), match.refractory_s, match.window_s, match.tolerance_s)
        other = c["false_accepts"] - c["confusable_false_accepts"]
        curve["thresholds"].append(float(th))
        curve["frr"].append((c["positives"] - c["hits"]) / c["positives"] if c["positives"] else 0.0)
        curve["fa_per_hour"].append(other / neg_h if neg_h > 0 else 0.0)
        curve["fa_per_hour_all"].append(c["false_accepts"] / all_h if all_h > 0 else 0.0)
        curve["confusable_trigger_rate"].append(c["confusable_triggers"] / c["confusables"] if c["confusables"] else 0.0)
        curve["false_accepts"].append(float(c["false_accepts"]))
    return curve


def sweep_points(curve: Mapping[str, Sequence[float]], fa_per_hour_targets: Sequence[float],
                 prefix: str = "test") -> dict[str, float]:
    """DET sweep points ``<prefix>/frr_at_<t>fah``: FRR at the lowest swept threshold whose FA/h
    is at most ``t``, read off this curve; 1.0 when no swept threshold gets there."""
    out = {}
    for target in fa_per_hour_targets:
        frr = 1.0
        for r, f in zip(curve["frr"], curve["fa_per_hour"]):
            if f <= target:
                frr = r
                break
        out[f"{prefix}/frr_at_{target:g}fah"] = float(frr)
    return out


@dataclass(frozen=True)
class Calibration:
    """The operating point chosen on val: ``threshold``, and val's ``fa_per_hour``, ``frr`` and
    ``confusable_trigger_rate`` there; ``met`` is False when no swept threshold reached both
    targets (the one closest to them is used)."""

    threshold: float
    target_fa_per_hour: float
    fa_per_hour: float
    frr: float
    met: bool
    confusable_trigger_rate: float = 0.0
    max_confusable_trigger_rate: float | None = None


def calibrate(val_curve: Mapping[str, Sequence[float]], target_fa_per_hour: float,
              max_confusable_trigger_rate: float | None = None,
              fa_curves: Mapping[str, Sequence[float]] | None = None) -> Calibration:
    """The lowest threshold of the **val** curve with ``fa_per_hour <= target_fa_per_hour``,
    (when given and the curve has it) ``confusable_trigger_rate <= max_confusable_trigger_rate``,
    and every curve of ``fa_curves`` (FA/h of other negative-only audio at the same thresholds,
    e.g. :func:`det_curve`'s ``fa_per_hour`` on the dev halves of real-speech sets) at most the target too.

    If none meets both, the threshold closest to them: smallest sum of the relative excesses over
    each target (the highest such threshold on ties).

    Raises:
        ValueError: an empty curve.
    """
    ths, fah, frr = (np.asarray(val_curve[k], dtype=np.float64) for k in ("thresholds", "fa_per_hour", "frr"))
    if ths.size == 0:
        raise ValueError("calibrate: empty val curve")
    conf = np.asarray(val_curve.get("confusable_trigger_rate", np.zeros_like(ths)), dtype=np.float64)
    cmax = np.inf if max_confusable_trigger_rate is None else float(max_confusable_trigger_rate)
    extra = [np.asarray(c, dtype=np.float64) for c in (fa_curves or {}).values()]
    if any(c.shape != ths.shape for c in extra):
        raise ValueError("calibrate: fa_curves must have one value per threshold of the val curve")
    ok = np.flatnonzero((fah <= target_fa_per_hour) & (conf <= cmax)
                        & np.all([c <= target_fa_per_hour for c in extra] or [True], axis=0))
    if ok.size:
        i, met = int(ok[0]), True
    else:
        excess = np.maximum(fah - target_fa_per_hour, 0.0) / max(target_fa_per_hour, 1e-9)
        for c in extra:
            excess = excess + np.maximum(c - target_fa_per_hour, 0.0) / max(target_fa_per_hour, 1e-9)
        if np.isfinite(cmax):
            excess = excess + np.maximum(conf - cmax, 0.0) / max(cmax, 1e-9)
        i, met = int(np.flatnonzero(excess == excess.min())[-1]), False
    return Calibration(float(ths[i]), float(target_fa_per_hour), float(fah[i]), float(frr[i]), met,
                       float(conf[i]), max_confusable_trigger_rate)


def measure(scored: ScoredStreams, threshold: float, match: Matching, prefix: str = "test") -> dict[str, float]:
    """Metrics at a fixed ``threshold`` (chosen on val), counts beside rates:

    ``<prefix>/frr``, ``/fa_per_hour`` (false accepts off sound-alikes per hour of the negative
    audio outside them), ``/fa_per_hour_all`` (every false accept per hour outside positives),
    ``/confusable_trigger_rate`` (fraction of sound-alike negative occurrences that fire),
    ``/num_positives``, ``/num_missed``, ``/num_false_accepts`` (all), ``/num_confusable_false_accepts``,
    ``/num_confusables``, ``/num_confusable_triggers``, ``/hours``, ``/negative_hours`` (outside
    positives and sound-alikes), ``/threshold``.
    """
    c = count_outcomes(scored, threshold, match.refractory_s, match.window_s, match.tolerance_s)
    neg_h = negative_seconds(scored, match.window_s, match.tolerance_s, exclude_confusables=True) / 3600.0
    all_h = negative_seconds(scored, match.window_s, match.tolerance_s) / 3600.0
    missed = c["positives"] - c["hits"]
    other = c["false_accepts"] - c["confusable_false_accepts"]
    m = {
        "frr": missed / c["positives"] if c["positives"] else float("nan"),
        "fa_per_hour": other / neg_h if neg_h > 0 else float("nan"),
        "fa_per_hour_all": c["false_accepts"] / all_h if all_h > 0 else float("nan"),
        "confusable_trigger_rate": c["confusable_triggers"] / c["confusables"] if c["confusables"] else float("nan"),
        "num_positives": c["positives"], "num_missed": missed, "num_false_accepts": c["false_accepts"],
        "num_confusable_false_accepts": c["confusable_false_accepts"],
        "num_confusables": c["confusables"], "num_confusable_triggers": c["confusable_triggers"],
        "hours": scored.seconds / 3600.0, "negative_hours": neg_h, "threshold": threshold,
    }
    return {f"{prefix}/{k}": float(v) for k, v in m.items()}


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
