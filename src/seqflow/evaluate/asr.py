"""Speech-recognition evaluation: WER and CER over a test set, per data source, and a table of
sample hypotheses against their references.

Error rates are corpus-level (Levenshtein edits summed over utterances, divided by the summed
reference length), as jiwer and torchmetrics compute them: WER over words (split on whitespace),
CER over characters including the single spaces between words. References are the normalised
transcripts (the shard ``txt``); hypotheses come from :class:`seqflow.serve.transcriber.Transcriber`.
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jiwer
import numpy as np
import torch
from tqdm.auto import tqdm

from seqflow.serve.transcriber import Transcriber

TABLE_COLUMNS = ("key", "source", "cer", "reference", "hypothesis")


def _clean(text: str) -> str:
    return " ".join(str(text).split())


def error_counts(reference: str, hypothesis: str) -> dict[str, int]:
    """``{"word_edits", "words", "char_edits", "chars"}`` of one utterance (whitespace collapsed
    first); edits = substitutions + deletions + insertions, from jiwer's alignments."""
    ref, hyp = _clean(reference), _clean(hypothesis)
    if not ref:  # jiwer refuses empty references: every hypothesis token is an insertion
        return {"word_edits": len(hyp.split()), "words": 0, "char_edits": len(hyp), "chars": 0}
    w, c = jiwer.process_words(ref, hyp), jiwer.process_characters(ref, hyp)
    return {"word_edits": w.substitutions + w.deletions + w.insertions, "words": len(ref.split()),
            "char_edits": c.substitutions + c.deletions + c.insertions, "chars": len(ref)}


def _rates(c: Mapping[str, int]) -> tuple[float, float]:
    return c["word_edits"] / max(c["words"], 1), c["char_edits"] / max(c["chars"], 1)


def source_name(source: Any) -> str:
    """A metric-key-safe data source name (``[A-Za-z0-9_.-]``; ``unknown`` when empty)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", str(source or "")) or "unknown"


def evaluate_asr(transcriber: Transcriber, samples: Iterable[tuple[str, np.ndarray, Mapping[str, Any]]],
                 batch_size: int = 16, progress: bool = True, torch_threads: int | None = 1
                 ) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Transcribe every sample and score it against its reference.

    Args:
        transcriber: decodes the waveforms (its ``decoding`` settings apply).
        samples: ``(key, wav (S,) float32 at transcriber.sample_rate, meta)`` with ``meta["text"]``
            the reference and ``meta["source"]`` the data source (the shard reader's ``iter_samples``).
        batch_size: waveforms transcribed together. progress: a tqdm bar over the utterances.
        torch_threads: intra-op threads while transcribing (restored after; ``None``: leave as is).
            Beam search runs many tiny ops, for which one thread is fastest: on a busy 2-core
            machine two threads made attention beam search about 30x slower.
    Returns:
        ``(metrics, rows)``: metrics ``test/wer``, ``test/cer``, ``test/<source>/wer``,
        ``test/<source>/cer``, ``test/<source>/num_utterances``, ``test/num_utterances``, ``test/hours``;
        rows ``{"key", "source", "reference", "hypothesis", "wer", "cer", "duration"}`` in input order.
    """
    rows: list[dict[str, Any]] = []
    totals: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    seconds = 0.0
    bar = tqdm(desc="transcribing test utterances", unit="utt", disable=not progress, mininterval=5.0)
    pending: list[tuple[str, np.ndarray, Mapping[str, Any]]] = []

    def flush() -> None:
        nonlocal seconds
        hyps = transcriber.transcribe_batch([w for _, w, _ in pending], batch_size=batch_size)
        for (key, wav, meta), hyp in zip(pending, hyps):
            ref, src = _clean(meta.get("text", "")), source_name(meta.get("source"))
            c = error_counts(ref, hyp)
            for name in ("__all__", src):
                for k, v in c.items():
                    totals[name][k] += v
                totals[name]["utterances"] += 1
            duration = len(wav) / transcriber.sample_rate
            seconds += duration
            wer, cer = _rates(c)
            rows.append({"key": key, "source": src, "reference": ref, "hypothesis": hyp, "wer": wer, "cer": cer,
                         "duration": duration})
        bar.update(len(pending))
        pending.clear()

    threads = torch.get_num_threads()
    if torch_threads:
        torch.set_num_threads(int(torch_threads))
    try:
        for sample in samples:
            pending.append(sample)
            if len(pending) >= batch_size:
                flush()
        if pending:
            flush()
    finally:
        torch.set_num_threads(threads)
        bar.close()
    overall = totals["__all__"]
    wer, cer = _rates(overall)
    metrics = {"test/wer": wer, "test/cer": cer, "test/num_utterances": float(overall["utterances"]),
               "test/hours": seconds / 3600.0}
    for name in sorted(k for k in totals if k != "__all__"):
        s_wer, s_cer = _rates(totals[name])
        metrics[f"test/{name}/wer"], metrics[f"test/{name}/cer"] = s_wer, s_cer
        metrics[f"test/{name}/num_utterances"] = float(totals[name]["utterances"])
    return metrics, rows


def hypotheses_table(rows: Sequence[Mapping[str, Any]], path: str | Path, n: int = 50) -> Path:
    """Write ``n`` sample rows (evenly spaced over the rows sorted by key: deterministic, all
    sources) as a table: CSV when ``path`` ends in ``.csv``, else Markdown. Returns ``path``.

    Columns: ``key``, ``source``, ``cer`` (per utterance), ``reference``, ``hypothesis``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ordered = sorted(rows, key=lambda r: str(r["key"]))
    if len(ordered) > n:
        ordered = [ordered[int(i)] for i in np.linspace(0, len(ordered) - 1, n).round().astype(int)]
    if path.suffix == ".csv":
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(TABLE_COLUMNS)
            for r in ordered:
                w.writerow([r["key"], r.get("source", ""), f"{float(r['cer']):.4f}", r["reference"], r["hypothesis"]])
        return path

    def cell(x: Any) -> str:
        return str(x).replace("|", "\\|") or " "

    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    for r in ordered:
        lines.append("| " + " | ".join(cell(v) for v in (r["key"], r.get("source", ""), f"{float(r['cer']):.3f}",
                                                          r["reference"], r["hypothesis"])) + " |")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
