"""Score a packaged model on the ``eval`` half of each evaluation set (``eval/<set>/<metric>``).

Trigger word, at the val-calibrated threshold stored in the package:

* ``detected``: utterances whose normalised transcript contains the trigger phrase (as whole
  words), each scored alone with 1 s of silence on both sides: the fraction with at least one
  detection (``num_positives``, ``num_detected`` beside it);
* ``confusable_trigger_rate``: the utterances marked ``"confusable": true`` (sound-alikes of the
  phrase), each scored alone like the positives, that fire (``num_confusables`` and
  ``num_confusable_triggers`` beside it);
* ``fa_per_hour`` and ``num_false_accepts``: every detection on the remaining utterances, joined
  into continuous streams (``hours`` of them); ``fa_per_hour_all`` adds the sound-alikes' firings
  and hours (as :mod:`seqflow.evaluate.streams` defines both for the synthetic streams).

Speech recognition: utterances with an English (or unmarked) non-empty transcript →
``wer``, ``cer``, ``num_utterances``, ``hours`` (corpus-level, jiwer).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from seqflow.audio.io import read_audio
from seqflow.evaluate.sets import EvalSet
from seqflow.evaluate.streams import ScoredStreams
from seqflow.serve.detector import TriggerWordDetector, detect
from seqflow.text.normalize import TextNormalizationError, normalize_text

log = logging.getLogger("seqflow.evaluate")
PAD_S = 1.0          # silence either side of a positive utterance scored alone
NEGATIVE_STREAMS = 8  # the other utterances are joined into this many continuous streams, scored as one batch


def _norm(text: str) -> str:
    try:
        return normalize_text(text or "")
    except TextNormalizationError:
        return ""


def contains_phrase(text: str, phrase: str) -> bool:
    """Whether ``phrase`` occurs in ``text`` as whole words, both normalised."""
    p = _norm(phrase)
    return bool(p) and f" {p} " in f" {_norm(text)} "


def _audio(rows: list[dict], sample_rate: int) -> Iterator[tuple[dict, np.ndarray]]:
    for r in rows:
        yield r, read_audio(r["audio_filepath"], target_sr=sample_rate)[0]


def trigger_word_on_set(detector: TriggerWordDetector, es: EvalSet, phrase: str, half: str = "eval"
                        ) -> dict[str, float]:
    """Metrics of ``detector`` (at its stored threshold) on one set's ``half``; keys without the
    ``eval/<set>/`` prefix. ``detected`` / ``confusable_trigger_rate`` are NaN without such rows."""
    sr, th = detector.sample_rate, detector.threshold
    rows = es.half(half)
    pos_rows = [r for r in rows if contains_phrase(r.get("text", ""), phrase)]
    conf_rows = [r for r in rows if r.get("confusable") and not contains_phrase(r.get("text", ""), phrase)]
    neg_rows = [r for r in rows if not r.get("confusable") and not contains_phrase(r.get("text", ""), phrase)]
    detected, _ = _fired_alone(detector, pos_rows)
    conf_fired, conf_hours = _fired_alone(detector, conf_rows)
    negatives = _joined_scores(detector, neg_rows)
    false_accepts = sum(len(detect(probs, detector.step_s, th, detector.refractory_s, detector.first_step_end_s))
                        for probs in negatives.probs)
    hours = negatives.seconds / 3600.0
    nan = float("nan")
    return {"detected": detected / len(pos_rows) if pos_rows else nan,
            "num_positives": float(len(pos_rows)), "num_detected": float(detected),
            "fa_per_hour": false_accepts / hours if hours > 0 else nan,
            "num_false_accepts": float(false_accepts), "hours": hours,
            "fa_per_hour_all": (false_accepts + conf_fired) / (hours + conf_hours) if hours + conf_hours > 0 else nan,
            "confusable_trigger_rate": conf_fired / len(conf_rows) if conf_rows else nan,
            "num_confusables": float(len(conf_rows)), "num_confusable_triggers": float(conf_fired),
            "threshold": float(th)}


def _joined_scores(detector: TriggerWordDetector, rows: list[dict]) -> ScoredStreams:
    """``rows``' audio joined in order into ``NEGATIVE_STREAMS`` continuous streams, scored once."""
    streams: list[list[np.ndarray]] = [[] for _ in range(NEGATIVE_STREAMS)]
    for i, (_r, w) in enumerate(_audio(rows, detector.sample_rate)):
        streams[i % NEGATIVE_STREAMS].append(w)
    joined = [np.concatenate(s) for s in streams if s]
    empty = np.zeros((0, 2), dtype=np.float64)
    return ScoredStreams(probs=detector.scores_many(joined) if joined else [], positives=[empty] * len(joined),
                         confusables=[empty] * len(joined), seconds=sum(len(j) for j in joined) / detector.sample_rate,
                         step_s=detector.step_s, first_step_end_s=detector.first_step_end_s)


def negative_streams(detector: TriggerWordDetector, es: EvalSet, phrase: str, half: str = "dev") -> ScoredStreams:
    """Scores of ``half``'s utterances that are neither the phrase nor a sound-alike, joined into
    continuous streams (no positives): the audio a threshold may be calibrated against
    (``evaluate.calibration_sets``, dev half only)."""
    rows = [r for r in es.half(half) if not r.get("confusable") and not contains_phrase(r.get("text", ""), phrase)]
    return _joined_scores(detector, rows)


def _fired_alone(detector: TriggerWordDetector, rows: list[dict]) -> tuple[int, float]:
    """``(how many of rows fire, hours of their audio)``: each utterance scored alone with
    ``PAD_S`` of silence either side, at the detector's threshold."""
    if not rows:
        return 0, 0.0
    sr = detector.sample_rate
    pad = np.zeros(int(PAD_S * sr), dtype=np.float32)
    wavs = [np.concatenate([pad, w, pad]) for _, w in _audio(rows, sr)]
    fired = sum(bool(detect(probs, detector.step_s, detector.threshold, detector.refractory_s,
                            detector.first_step_end_s)) for probs in detector.scores_many(wavs))
    return fired, sum(len(w) - 2 * len(pad) for w in wavs) / sr / 3600.0


def asr_rows(es: EvalSet, half: str = "eval") -> list[dict[str, Any]]:
    """Rows ASR can be scored on: English (or unmarked ``lang``) with a non-empty normalised text."""
    return [r for r in es.half(half) if str(r.get("lang") or "en").startswith("en") and _norm(r.get("text", ""))]


def asr_on_set(transcriber, es: EvalSet, half: str = "eval") -> tuple[dict[str, float], list[dict]]:
    """``(metrics, rows)``: WER/CER of ``transcriber`` on the English rows of ``half``; metric keys
    without the ``eval/<set>/`` prefix; rows as :func:`seqflow.evaluate.asr.evaluate_asr`'s."""
    from seqflow.evaluate.asr import evaluate_asr

    rows = asr_rows(es, half)
    if not rows:
        return {"num_utterances": 0.0}, []
    samples = ((Path(str(r["audio_filepath"])).stem, w, {"text": _norm(r.get("text", "")), "source": es.name})
               for r, w in _audio(rows, transcriber.sample_rate))
    metrics, out_rows = evaluate_asr(transcriber, samples, progress=False)
    keep = {"test/wer": "wer", "test/cer": "cer", "test/num_utterances": "num_utterances", "test/hours": "hours"}
    return {v: float(metrics[k]) for k, v in keep.items() if k in metrics}, out_rows


def prefixed(name: str, metrics: Mapping[str, float], half: str = "eval") -> dict[str, float]:
    """``{"<half>/<name>/<k>": v}``: ``eval/<set>/...`` reports, ``dev/<set>/...`` may be chosen on."""
    return {f"{half}/{name}/{k}": float(v) for k, v in metrics.items()}


def halves(cfg) -> list[str]:
    """The set halves to score (``evaluate.halves``; default ``["dev", "eval"]``), eval last.

    Raises:
        ValueError: a half other than ``dev`` / ``eval``.
    """
    out = [str(h) for h in (cfg.evaluate.get("halves") or ["dev", "eval"])]
    bad = sorted(set(out) - {"dev", "eval"})
    if bad:
        raise ValueError(f"evaluate.halves: {bad} not allowed (dev, eval)")
    return sorted(set(out), key=["dev", "eval"].index)
