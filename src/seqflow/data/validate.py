"""Validate a prepared corpus: decode every file once, quarantine the bad ones, never drop silently.

Reads ``<root>/manifest.jsonl`` (written by prepare) and writes, atomically and with deterministic bytes:

- ``<root>/quarantine.jsonl``: one row per bad file,
  ``{"audio_filepath", "reason", "detail", "stage": "validate"}`` (rows of stage ``prepare`` kept first:
  the items the source dropped; they count against ``max_bad_fraction`` too);
- ``<root>/manifest.valid.jsonl``: the valid rows, ``duration`` replaced by the decoded duration;
  speech-recognition rows (``kind == "utterance"``) carry the normalised transcript
  (:func:`seqflow.text.normalize.normalize_text`) in ``text`` and the original in ``extra["raw_text"]``.

The manifest itself and the audio files are left untouched. Reasons (one per file, first match wins):
``empty_transcript`` (trigger-word rows), ``unnormalisable_text`` / ``empty_text`` (utterances: the
transcript does not normalise; the detail names the characters), ``missing``, ``empty``, ``unreadable``,
``truncated`` (a WAV whose header claims more frames than the file holds), ``channels``, ``sample_rate``,
``too_long``, ``nan_or_inf``, ``too_short``, ``silent``, ``clipped``.

>>> report = validate_corpus(Path("data"), min_duration=0.05, max_duration=120.0,
...                          max_bad_fraction=0.05, sample_rate=16000)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import struct
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from seqflow.audio.io import read_audio
from seqflow.data.manifest import (MANIFEST_NAME, QUARANTINE_NAME, Utterance, read_jsonl, read_manifest, write_jsonl,
                                   write_manifest)
from seqflow.errors import AudioDecodeError, DataValidationError
from seqflow.text.normalize import TextNormalizationError, normalize_text

log = logging.getLogger(__name__)

VALID_MANIFEST_NAME = "manifest.valid.jsonl"
TEXT_KINDS = ("positive", "negative", "utterance")  # kinds that must carry a transcript
SILENCE_THRESHOLD = 1e-4  # peak (or peak-to-peak) amplitude below this is silence (~ -80 dBFS)
CLIP_LEVEL = 0.999  # |x| at or above this counts as full scale
MAX_CLIPPED_FRACTION = 0.01  # more than 1 % of samples at full scale -> clipped
HEADER_CHECK_BYTES = 2_000_000  # files larger than this get a header check before decoding
CORPUS_SUMMARY_NAME = "corpus.json"  # written by prepare; user sources record their prepare drops in it


@dataclass
class ValidationReport:
    """Outcome of :func:`validate_corpus`.

    Attributes:
        total: rows in the manifest.
        valid: rows kept in ``manifest.valid.jsonl``.
        quarantined: rows written to ``quarantine.jsonl`` by this stage.
        bad_fraction: ``(quarantined + dropped) / (total + dropped)`` (0.0 for an empty manifest).
        reasons: reason -> number of files quarantined by this stage, sorted by reason.
        seconds: ``"<split>/<kind>"`` -> seconds of valid audio, sorted by key.
        quarantine_path / valid_manifest_path: the files written.
        dropped / dropped_reasons: items the source dropped at prepare (its ``stage: prepare`` rows), per reason.
    """

    total: int
    valid: int
    quarantined: int
    bad_fraction: float
    reasons: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    quarantine_path: Path | None = None
    valid_manifest_path: Path | None = None
    dropped: int = 0
    dropped_reasons: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        """One log line: counts, reasons and hours of valid audio."""
        why = ", ".join(f"{k} {v}" for k, v in self.reasons.items()) or "none"
        hours = sum(self.seconds.values()) / 3600.0
        dropped = ", ".join(f"{k} {v}" for k, v in self.dropped_reasons.items())
        return (f"validate: {self.valid} valid, {self.quarantined} quarantined ({why}) of {self.total} files; "
                + (f"{self.dropped} dropped at prepare ({dropped}); " if self.dropped else "")
                + f"{hours:.3f} h valid audio")

    def to_dict(self) -> dict:
        """Plain JSON-able dict (for MLflow params / Prefect artifacts)."""
        return {"total": self.total, "valid": self.valid, "quarantined": self.quarantined,
                "bad_fraction": self.bad_fraction, "reasons": dict(self.reasons), "seconds": dict(self.seconds),
                "quarantine_path": str(self.quarantine_path), "valid_manifest_path": str(self.valid_manifest_path),
                "dropped": self.dropped, "dropped_reasons": dict(self.dropped_reasons)}

    def counts(self) -> dict:
        """The counts the validate stage returns (flow summary): ``total``, ``valid``, ``quarantined``,
        ``reasons``, ``dropped``, ``dropped_reasons`` (items the source dropped at prepare) and
        ``bad_fraction`` (rounded to 6 digits); no paths, no seconds."""
        return {"total": self.total, "valid": self.valid, "quarantined": self.quarantined,
                "reasons": dict(self.reasons), "dropped": self.dropped, "dropped_reasons": dict(self.dropped_reasons),
                "bad_fraction": round(float(self.bad_fraction), 6)}


def check_transcript(text: str | None, kind: str) -> tuple[str, str] | None:
    """``("empty_transcript", detail)`` when a speech row (positive/negative/utterance) has no letters or digits.

    Backgrounds carry no text and always pass.
    """
    if kind not in TEXT_KINDS:
        return None
    text = (text or "").strip()
    if not text:
        return ("empty_transcript", "no text")
    if not any(ch.isalnum() for ch in text):
        return ("empty_transcript", f"no letters or digits in {text[:40]!r}")
    return None


def normalize_transcript(text: str | None, kind: str) -> tuple[str | None, tuple[str, str] | None]:
    """Normalise an utterance transcript: ``(normalised text, None)`` or ``(None, (reason, detail))``.

    Only ``kind == "utterance"`` rows (speech recognition) are normalised; other kinds return
    ``(text, None)`` unchanged. Reasons: ``unnormalisable_text`` (detail names the characters left
    outside ``[a-z' ]``) and ``empty_text`` (nothing left after normalisation).

    >>> normalize_transcript("Wake me at 7am!", "utterance")
    ('wake me at seven a m', None)
    >>> normalize_transcript("snow ☃", "utterance")[1]
    ('unnormalisable_text', "characters '☃' in 'snow ☃'")
    """
    if kind != "utterance":
        return text, None
    raw = text or ""
    try:
        return normalize_text(raw), None
    except TextNormalizationError as exc:
        if exc.chars:
            return None, (exc.reason, f"characters {' '.join(map(repr, exc.chars))} in {raw[:80]!r}")
        return None, (exc.reason, f"nothing left after normalisation of {raw[:80]!r}")


def check_header(channels: int, frames: int, sr: int, *, max_duration: float | None, max_channels: int = 2,
                 min_sample_rate: int = 0) -> tuple[str, str] | None:
    """Checks that need only the file header (run before decoding, so huge files are not loaded).

    Returns ``("channels" | "sample_rate" | "too_long", detail)`` or ``None``.
    """
    if channels > max_channels:
        return ("channels", f"{channels} channels > {max_channels}")
    if sr < min_sample_rate:
        return ("sample_rate", f"{sr} Hz < {min_sample_rate} Hz")
    if max_duration is not None and sr > 0 and frames / sr > max_duration:
        return ("too_long", f"{frames / sr:.3f} s > {max_duration} s")
    return None


def check_audio(wav: np.ndarray, sr: int, channels: int | None = None, *, min_duration: float = 0.0,
                max_duration: float | None = None, max_channels: int = 2, min_sample_rate: int = 0,
                silence_threshold: float = SILENCE_THRESHOLD, clip_level: float = CLIP_LEVEL,
                max_clipped_fraction: float = MAX_CLIPPED_FRACTION) -> tuple[str, str] | None:
    """Check one decoded waveform; pure (no I/O).

    Args:
        wav: ``(S,)`` or ``(S, C)`` float samples, full scale = 1.0.
        sr: sample rate [Hz].
        channels: channel count (default: from ``wav``'s shape).
        min_duration / max_duration: allowed duration range [s] (``max_duration=None``: no upper limit).
        max_channels: more channels than this -> ``channels``.
        min_sample_rate: a lower rate [Hz] -> ``sample_rate``.
        silence_threshold: peak or peak-to-peak amplitude below this -> ``silent`` (digital silence, DC).
        clip_level / max_clipped_fraction: more than this fraction of samples with ``|x| >= clip_level``
            -> ``clipped``.

    Returns:
        ``None`` when the audio is usable, else ``(reason, detail)`` with reason one of ``channels``,
        ``sample_rate``, ``too_long``, ``empty``, ``nan_or_inf``, ``too_short``, ``silent``, ``clipped``.
    """
    wav = np.asarray(wav)
    if channels is None:
        channels = 1 if wav.ndim == 1 else int(wav.shape[1])
    frames = int(wav.shape[0]) if wav.ndim else 0
    bad = check_header(channels, frames, sr, max_duration=max_duration, max_channels=max_channels,
                       min_sample_rate=min_sample_rate)
    if bad:
        return bad
    if wav.size == 0:
        return ("empty", "no samples")
    if not np.isfinite(wav).all():
        return ("nan_or_inf", f"{int(np.count_nonzero(~np.isfinite(wav)))} non-finite samples")
    duration = frames / sr
    if duration < min_duration:
        return ("too_short", f"{duration:.3f} s < {min_duration} s")
    hi, lo = float(wav.max()), float(wav.min())
    peak = max(hi, -lo)
    if peak < silence_threshold or hi - lo < silence_threshold:
        return ("silent", f"peak {peak:.2e}, peak-to-peak {hi - lo:.2e} < {silence_threshold:.0e}")
    if peak >= clip_level:
        fraction = np.count_nonzero(np.abs(wav) >= clip_level) / wav.size
        if fraction > max_clipped_fraction:
            return ("clipped", f"{100 * fraction:.2f} % of samples at full scale")
    return None


def wav_truncation(path: Path) -> tuple[str, str, float] | None:
    """``("truncated", detail, seconds held)`` when a RIFF/WAVE file's ``data`` chunk claims more bytes than the
    file holds (a copy cut short: libsndfile silently decodes what is there), else ``None``.

    Only the chunk headers are read. Not WAV, a malformed header (left to the decoder) or a streamed size
    (``0`` or ``0xFFFFFFFF``) -> ``None``.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            block, rate, pos = 0, 0, 12
            while pos + 8 <= size:
                f.seek(pos)
                cid, csize = struct.unpack("<4sI", f.read(8))
                if cid == b"fmt ":
                    fmt = f.read(16)
                    if len(fmt) == 16:
                        _, _, rate, _, block = struct.unpack("<HHIIH", fmt[:14])
                elif cid == b"data":
                    held = size - pos - 8
                    if csize in (0, 0xFFFFFFFF) or csize <= held or block <= 0 or rate <= 0:
                        return None
                    claimed, frames = csize // block, held // block
                    return ("truncated", f"header claims {claimed} frames ({claimed / rate:.3f} s), the file holds "
                                         f"{frames} ({frames / rate:.3f} s): {csize - held} bytes missing",
                            frames / rate)
                pos += 8 + csize + (csize & 1)
    except (OSError, struct.error):
        return None
    return None


def _check_file(path: Path, limits: dict) -> tuple[str | None, str, float]:
    """Decode ``path`` once and check it: ``(reason or None, detail, duration [s])``."""
    try:
        size = path.stat().st_size if path.is_file() else -1
        if size == 0:
            return ("empty", "zero bytes", 0.0)
        cut = wav_truncation(path) if size > 0 else None
        if cut is not None:
            return cut
        info = None
        if size > HEADER_CHECK_BYTES:  # read the header first so huge / many-channel files are not decoded
            try:
                info = sf.info(str(path))
            except Exception:
                info = None  # read_audio below raises the precise missing/unreadable error
        if info is not None:
            bad = check_header(info.channels, info.frames, info.samplerate, max_duration=limits["max_duration"],
                               max_channels=limits["max_channels"], min_sample_rate=limits["min_sample_rate"])
            if bad:
                return (*bad, info.frames / max(info.samplerate, 1))
        wav, sr = read_audio(path, mono=False)
    except AudioDecodeError as exc:
        return (exc.reason, exc.detail, 0.0)
    except OSError as exc:
        return ("unreadable", str(exc)[:200], 0.0)
    bad = check_audio(wav, sr, **limits)
    return (*bad, wav.shape[0] / sr) if bad else (None, "", wav.shape[0] / sr)


def _prepare_rows(root: Path, rows: list[dict]) -> list[dict]:
    """The ``stage: prepare`` rows that belong to the corpus now in ``root``: all of them, unless its
    ``corpus.json`` has no ``quarantined`` record (the synthetic source drops nothing at prepare), in which case
    they were left by an earlier corpus of another source in the same ``data.root`` and are dropped."""
    try:
        summary = json.loads((root / CORPUS_SUMMARY_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return rows
    if rows and isinstance(summary, dict) and "quarantined" not in summary:
        log.info("validate: removing %d prepare-stage quarantine rows left by an earlier corpus (the %s corpus "
                 "in %s records none)", len(rows), summary.get("source", "current"), root)
        return []
    return rows


def validate_corpus(root: Path, min_duration: float, max_duration: float, max_bad_fraction: float, sample_rate: int,
                    max_channels: int = 2, progress: bool = True, *, max_background_duration: float | None = None,
                    silence_threshold: float = SILENCE_THRESHOLD, clip_level: float = CLIP_LEVEL,
                    max_clipped_fraction: float = MAX_CLIPPED_FRACTION, workers: int | None = None) -> ValidationReport:
    """Decode every file of ``<root>/manifest.jsonl`` once; quarantine the bad ones; write the valid manifest.

    Args:
        root: corpus root (relative ``audio_filepath`` values resolve against it).
        min_duration / max_duration: allowed duration [s] of speech rows; backgrounds use ``min_duration`` and
            ``max_background_duration`` (``None``: no upper limit, real recordings may be long).
        max_bad_fraction: fail when more than this fraction of items is bad: rows quarantined here plus the
            items the source dropped at prepare (``stage: prepare`` rows of ``quarantine.jsonl``, counted in the
            total too; rows left by an earlier corpus whose ``corpus.json`` records none are removed).
        sample_rate: target rate [Hz]; files below half of it are quarantined (``sample_rate``), other rates
            are valid (resampled later).
        max_channels: more channels -> ``channels``.
        progress: show a tqdm bar.
        silence_threshold / clip_level / max_clipped_fraction: see :func:`check_audio`.
        workers: decoding threads (default: ``min(4, cpu count)``; libsndfile releases the GIL).

    Returns:
        :class:`ValidationReport`; ``manifest.valid.jsonl`` and ``quarantine.jsonl`` written (atomic).

    Raises:
        DataValidationError: the manifest is missing or empty, no speech row is valid, or
            ``bad_fraction > max_bad_fraction`` (message: counts per reason and the quarantine path).
            Both output files are written before raising so the quarantine can be inspected.
    """
    root = Path(root)
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file():
        raise DataValidationError(f"{manifest_path}: no manifest (run prepare first)")
    utts = read_manifest(manifest_path)
    if not utts:
        raise DataValidationError(f"{manifest_path}: manifest has no rows")

    common = dict(max_channels=max_channels, min_sample_rate=sample_rate // 2, silence_threshold=silence_threshold,
                  clip_level=clip_level, max_clipped_fraction=max_clipped_fraction, min_duration=min_duration)
    speech = dict(common, max_duration=max_duration)
    background = dict(common, max_duration=max_background_duration)

    def check(u: Utterance) -> tuple[str | None, str, float, str | None]:
        if u.kind == "utterance":
            text, bad = normalize_transcript(u.text, u.kind)
        else:
            text, bad = u.text, check_transcript(u.text, u.kind)
        if bad:
            return (*bad, u.duration, None)
        return (*_check_file(u.resolve(root), background if u.kind == "background" else speech), text)

    workers = workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool, \
            tqdm(total=len(utts), desc="validate", unit="file", disable=not progress) as bar:
        results = []
        for res in pool.map(check, utts):
            results.append(res)
            bar.update(1)

    valid: list[Utterance] = []
    rows: list[dict] = []
    seconds: Counter = Counter()
    for u, (reason, detail, duration, text) in zip(utts, results):
        if reason is None:
            u.duration = round(float(duration), 6)
            if u.kind == "utterance":
                u.extra, u.text = {**(u.extra or {}), "raw_text": u.text}, text
            valid.append(u)
            seconds[f"{u.split}/{u.kind}"] += u.duration
        else:
            rows.append({"audio_filepath": u.audio_filepath, "reason": reason, "detail": detail, "stage": "validate"})

    quarantine_path, valid_path = root / QUARANTINE_NAME, root / VALID_MANIFEST_NAME
    earlier = _prepare_rows(root, [r for r in read_jsonl(quarantine_path) if r.get("stage") == "prepare"])
    write_jsonl(quarantine_path, earlier + rows)
    write_manifest(valid_path, valid)

    reasons = dict(sorted(Counter(r["reason"] for r in rows).items()))
    dropped = dict(sorted(Counter(r.get("reason", "unknown") for r in earlier).items()))
    report = ValidationReport(
        total=len(utts), valid=len(valid), quarantined=len(rows),
        bad_fraction=(len(rows) + len(earlier)) / (len(utts) + len(earlier)),
        reasons=reasons, seconds={k: round(v, 3) for k, v in sorted(seconds.items())},
        quarantine_path=quarantine_path, valid_manifest_path=valid_path, dropped=len(earlier),
        dropped_reasons=dropped)
    log.info(report.summary())

    why = ", ".join(f"{k}: {v}" for k, v in reasons.items())
    if report.bad_fraction > max_bad_fraction:
        both = ", ".join(f"{k}: {v}" for k, v in sorted((Counter(reasons) + Counter(dropped)).items()))
        split = f" ({report.quarantined} at validate, {report.dropped} dropped at prepare)" if report.dropped else ""
        raise DataValidationError(
            f"{root}: {report.quarantined + report.dropped} of {report.total + report.dropped} files "
            f"quarantined{split} ({report.bad_fraction:.1%} > data.max_bad_fraction {max_bad_fraction:.1%}); "
            f"reasons: {both}; see {quarantine_path}")
    if not any(u.kind != "background" for u in valid):
        raise DataValidationError(
            f"{root}: no valid utterance ({report.quarantined} quarantined; reasons: {why or 'none'}); "
            f"see {quarantine_path}")
    return report
