"""Score a packaged model on the ``eval`` half of each evaluation set (``eval/<set>/<metric>``).

Trigger word, at the val-calibrated threshold stored in the package:

* ``detected``: utterances whose normalised transcript contains the trigger phrase (as whole
  words), each scored alone with 1 s of silence on both sides: the fraction with at least one
  detection (``num_positives``, ``num_detected`` beside it);
* ``fa_per_hour`` and ``num_false_accepts``: every detection on the other utterances, joined into
  continuous streams (``hours`` of them);
* ``confusable_trigger_rate``: among the other utterances, those marked ``"confusable": true``
  (sound-alikes of the phrase) that fire, when the set has any.

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
    neg_rows = [r for r in rows if not contains_phrase(r.get("text", ""), phrase)]
    pad = np.zeros(int(PAD_S * sr), dtype=np.float32)
    detected = 0
    if pos_rows:
        wavs = [np.concatenate([pad, w, pad]) for _, w in _audio(pos_rows, sr)]
        for probs in detector.scores_many(wavs):
            detected += bool(detect(probs, detector.step_s, th, detector.refractory_s, detector.first_step_end_s))
    # negatives: utterances joined in order into a few continuous streams; remember where each lies
    streams: list[list[np.ndarray]] = [[] for _ in range(NEGATIVE_STREAMS)]
    spans: list[list[tuple[float, float, bool]]] = [[] for _ in range(NEGATIVE_STREAMS)]
    lengths = [0] * NEGATIVE_STREAMS
    for i, (r, w) in enumerate(_audio(neg_rows, sr)):
        k = i % NEGATIVE_STREAMS
        spans[k].append((lengths[k] / sr, (lengths[k] + len(w)) / sr, bool(r.get("confusable"))))
        streams[k].append(w)
        lengths[k] += len(w)
    joined = [np.concatenate(s) for s in streams if s]
    false_accepts, conf_total, conf_fired = 0, 0, 0
    for probs, sp in zip(detector.scores_many(joined) if joined else [], [s for s in spans if s]):
        dets = detect(probs, detector.step_s, th, detector.refractory_s, detector.first_step_end_s)
        false_accepts += len(dets)
        starts = np.asarray([d["start"] for d in dets])
        for a, b, conf in sp:
            if conf:
                conf_total += 1
                conf_fired += bool(np.any((starts >= a) & (starts < b + detector.refractory_s)))
    hours = sum(lengths) / sr / 3600.0
    return {"detected": detected / len(pos_rows) if pos_rows else float("nan"),
            "num_positives": float(len(pos_rows)), "num_detected": float(detected),
            "fa_per_hour": false_accepts / hours if hours > 0 else float("nan"),
            "num_false_accepts": float(false_accepts), "hours": hours,
            "confusable_trigger_rate": conf_fired / conf_total if conf_total else float("nan"),
            "num_confusables": float(conf_total), "threshold": float(th)}


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


def prefixed(name: str, metrics: Mapping[str, float]) -> dict[str, float]:
    """``{"eval/<name>/<k>": v}``."""
    return {f"eval/{name}/{k}": float(v) for k, v in metrics.items()}
