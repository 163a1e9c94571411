"""Speech-recognition shards: validated utterances with normalised transcripts, the tokenizer,
and the shard-stage quarantine.

:class:`UtteranceSource` reads ``<data root>/manifest.valid.jsonl`` (rows of kind ``utterance``),
sorted by ``audio_filepath`` within each split, and for every row

1. takes the transcript as validate normalised it (validate is the one owner of normalisation:
   ``manifest.valid.jsonl`` holds the normalised text, the raw one in ``raw_text``);
2. trains the tokenizer once on the normalised **train** transcripts (``model.tokenizer.kind``:
   ``char`` | ``unigram`` | ``bpe``, ``model.tokenizer.vocab_size``) and saves it to
   ``<shard set>/tokenizer/`` (reloaded when already there);
3. encodes the transcript once (the ids are stored with the sample as ``tokens``); a token that is ``<unk>`` (characters the train transcripts never had,
   possible in val/test) → quarantine ``oov_characters``;
4. decodes the audio with :func:`~seqflow.audio.io.read_audio` at ``audio.sample_rate`` (resampled,
   down-mixed) → quarantine with the decoder's reason (``missing``, ``unreadable``, ...);
5. checks CTC feasibility (:func:`~seqflow.models.ctc.ctc_feasible`: 4x-subsampled frames at
   ``model.features.hop_length`` >= tokens + adjacent repeats) → quarantine ``too_short_for_ctc``
   (its CTC loss would be infinite). Applied for both ASR models, which share shards.

Quarantine rows ``{"audio_filepath", "reason", "detail", "stage": "shard", "split"}`` go to
``<shard set>/quarantine.jsonl`` (``data/`` is already versioned by DVC and stays untouched).
A split left with no utterance is a :class:`~seqflow.errors.ShardError` naming the reasons.

Sample dicts for :func:`seqflow.shards.writer.write_shards`: ``{"__key__": "<split>-<i>-<stem>",
"audio" float32 (S,), "sample_rate", "txt": normalised text, "json": {"duration", "sample_rate",
"speaker", "source" (the data source, ``data.source``), "raw_text", "split", "tokens"}}``.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from seqflow.audio.io import read_audio
from seqflow.data.manifest import QUARANTINE_NAME, Utterance, read_jsonl, read_manifest, write_jsonl
from seqflow.errors import AudioDecodeError, SeqflowError, ShardError
from seqflow.models.ctc import ctc_feasible, ctc_output_frames, min_frames_for_ctc
from seqflow.shards.clips import SPLITS, VALID_MANIFEST_NAME
from seqflow.text.tokenizers import Tokenizer, build_tokenizer, load_tokenizer

log = logging.getLogger(__name__)

UTTERANCE_LAYOUT_VERSION = 2  # bump when the utterance sample layout or the shard-stage checks change
TOKENIZER_DIR = "tokenizer"
STAGE = "shard"


def tokenizer_settings(cfg) -> dict:
    """``{"kind", "vocab_size"}`` from ``model.tokenizer`` (defaults: ``char``, 256); ``vocab_size``
    is dropped for ``char`` (whose vocabulary is the train characters)."""
    t = cfg.model.get("tokenizer") or {}
    kind = str(t.get("kind", "char"))
    return {"kind": kind} if kind == "char" else {"kind": kind, "vocab_size": int(t.get("vocab_size", 256))}


def utterance_shard_config(cfg) -> dict:
    """Everything that changes utterance shard content (hashed by ``shard_config_hash``)."""
    from seqflow.shards.writer import effective_min_shards

    return {"family": "asr", "layout": UTTERANCE_LAYOUT_VERSION, "sample_rate": int(cfg.audio.sample_rate),
            "format": str(cfg.shards.format), "target_bytes": int(cfg.shards.target_bytes),
            "min_shards": effective_min_shards(cfg), "hop_length": int(cfg.model.features.hop_length),
            "tokenizer": tokenizer_settings(cfg), "source": str(cfg.data.get("source", "")), "seed": int(cfg.seed)}


def sample_key(split: str, i: int, audio_filepath: str) -> str:
    """``<split>-<i:06d>-<file stem>``, characters other than ``[A-Za-z0-9_-]`` replaced by ``_``."""
    stem = re.sub(r"[^A-Za-z0-9_-]", "_", Path(audio_filepath).stem)[:64]
    return f"{split}-{i:06d}-{stem}"


@dataclass
class _Item:
    utt: Utterance
    key: str
    text: str
    ids: list[int]


class UtteranceSource:
    """Utterance samples per split from the validated corpus at ``root`` (see module doc).

    Args:
        root: data root (holds ``manifest.valid.jsonl``). out_root: the shard set folder
            (``tokenizer/`` and ``quarantine.jsonl`` are written there).
        sample_rate: target rate [Hz]. hop_length: log-mel hop [samples] for the CTC check.
        tokenizer: ``{"kind", "vocab_size"?}``. seed: SentencePiece seed. source_name: ``data.source``.
    """

    def __init__(self, root: str | Path, out_root: str | Path, sample_rate: int, hop_length: int,
                 tokenizer: dict, seed: int = 0, source_name: str = "",
                 manifest_name: str = VALID_MANIFEST_NAME) -> None:
        self.root, self.out_root = Path(root), Path(out_root)
        self.sample_rate, self.hop_length, self.seed = int(sample_rate), int(hop_length), int(seed)
        self.tokenizer_kind = str(tokenizer.get("kind", "char"))
        self.vocab_size = int(tokenizer.get("vocab_size", 256))
        self.source_name, self.manifest_name = source_name, manifest_name
        self.rows: dict[str, list[dict]] = {s: [] for s in SPLITS}  # quarantine rows per split
        self._items: dict[str, list[_Item]] | None = None
        self._tokenizer: Tokenizer | None = None

    @classmethod
    def from_config(cls, cfg, data_root: str | Path, out_root: str | Path) -> "UtteranceSource":
        """Build from the composed config (``audio``, ``model.features``, ``model.tokenizer``, ``seed``, ``data``)."""
        return cls(data_root, out_root, int(cfg.audio.sample_rate), int(cfg.model.features.hop_length),
                   tokenizer_settings(cfg), int(cfg.seed), str(cfg.data.get("source", "")))

    @property
    def tokenizer_dir(self) -> Path:
        """``<shard set>/tokenizer``."""
        return self.out_root / TOKENIZER_DIR

    @property
    def prepared(self) -> bool:
        return self._items is not None

    def _quarantine(self, split: str, path: str, reason: str, detail: str) -> None:
        self.rows[split].append({"audio_filepath": path, "reason": reason, "detail": detail, "stage": STAGE,
                                 "split": split})

    def tokenizer(self, texts: list[str] | None = None) -> Tokenizer:
        """The shard set's tokenizer: loaded from :attr:`tokenizer_dir`, else trained on ``texts``
        (default: the normalised train transcripts) and saved there."""
        if self._tokenizer is None:
            try:
                self._tokenizer = load_tokenizer(self.tokenizer_dir)
            except SeqflowError:
                if texts is None:
                    self.prepare()
                    return self._tokenizer
                if not texts:
                    raise ShardError(f"{self.root / self.manifest_name}: no train utterance with a usable "
                                     f"transcript to train the tokenizer on; see {self.out_root / QUARANTINE_NAME}")
                self._tokenizer = build_tokenizer(self.tokenizer_kind, texts, self.vocab_size,
                                                  out_dir=self.tokenizer_dir, seed=self.seed)
                log.info("trained %s tokenizer (%d tokens) on %d train transcripts -> %s", self.tokenizer_kind,
                         self._tokenizer.vocab_size, len(texts), self.tokenizer_dir)
        return self._tokenizer

    def prepare(self) -> None:
        """Text pass over every split: normalise, build/load the tokenizer, drop OOV transcripts and
        utterances too short for CTC by their manifest duration.

        Raises:
            ShardError: manifest missing, or a split has no utterance left (message names the reasons).
        """
        if self._items is not None:
            return
        path = self.root / self.manifest_name
        if not path.is_file():
            raise ShardError(f"{path}: missing (run prepare and validate first)")
        normalized: dict[str, list[tuple[Utterance, str, str]]] = {s: [] for s in SPLITS}
        by_split: dict[str, list[Utterance]] = {s: [] for s in SPLITS}
        for u in read_manifest(path):
            if u.kind == "utterance" and u.split in by_split:
                by_split[u.split].append(u)
        for split, utts in by_split.items():
            for i, u in enumerate(sorted(utts, key=lambda u: u.audio_filepath)):
                # validate owns normalisation (manifest.valid.jsonl holds the normalised text)
                normalized[split].append((u, sample_key(split, i, u.audio_filepath), u.text))
        tok = self.tokenizer([t for _, _, t in normalized["train"]])
        self._items = {s: [] for s in SPLITS}
        for split, rows in normalized.items():
            for u, key, text in rows:
                ids = tok.encode(text)
                if tok.unk_id in ids:
                    chars = sorted({c for c in text if tok.unk_id in tok.encode(c)})
                    self._quarantine(split, u.audio_filepath, "oov_characters",
                                     f"characters {chars} of {text[:80]!r} are not in the {self.tokenizer_kind} "
                                     f"vocabulary trained on the train transcripts")
                elif not self._feasible(split, u, int(round(u.duration * self.sample_rate)), ids):
                    continue
                else:
                    self._items[split].append(_Item(u, key, text, ids))
        for split in SPLITS:
            if not self._items[split]:
                self._fail(split)

    def _feasible(self, split: str, u: Utterance, num_samples: int, ids: list[int]) -> bool:
        if ctc_feasible(num_samples, ids, self.hop_length):
            return True
        frames = ctc_output_frames(num_samples, self.hop_length)
        self._quarantine(split, u.audio_filepath, "too_short_for_ctc",
                         f"{num_samples / self.sample_rate:.3f} s gives {frames} CTC frames, "
                         f"{min_frames_for_ctc(ids)} needed for {len(ids)} tokens")
        return False

    def _fail(self, split: str) -> None:
        why = Counter(r["reason"] for r in self.rows[split])
        detail = ", ".join(f"{k} {v}" for k, v in sorted(why.items())) or "no utterance rows of this split"
        raise ShardError(f"{self.root / self.manifest_name}: split {split!r} has no valid utterance for ASR "
                         f"({detail}); see {self.out_root / QUARANTINE_NAME}")

    def count(self, split: str) -> int:
        """Utterances of ``split`` that passed the text checks (an upper bound on its samples)."""
        self.prepare()
        return len(self._items[split])

    def samples(self, split: str) -> Iterator[dict]:
        """Yield the sample dicts of ``split`` in sorted order (see module doc), quarantining
        undecodable audio and utterances too short for CTC.

        Raises:
            ShardError: no utterance of ``split`` is left (after the last one was read).
        """
        self.prepare()
        good = 0
        for it in self._items[split]:
            try:
                wav, sr = read_audio(it.utt.resolve(self.root), target_sr=self.sample_rate)
            except AudioDecodeError as exc:
                self._quarantine(split, it.utt.audio_filepath, exc.reason, exc.detail or str(exc))
                continue
            if not self._feasible(split, it.utt, len(wav), it.ids):
                continue
            good += 1
            meta = {"duration": len(wav) / sr, "sample_rate": sr, "speaker": it.utt.speaker or "",
                    "source": self.source_name, "raw_text": str(it.utt.extra.get("raw_text", it.utt.text)),
                    "split": split, "tokens": list(it.ids)}  # tokenised once, here
            yield {"__key__": it.key, "audio": wav, "sample_rate": sr, "txt": it.text, "json": meta}
        why = Counter(r["reason"] for r in self.rows[split])
        log.info("shard %s: %d utterances, %d quarantined (%s)", split, good, sum(why.values()),
                 ", ".join(f"{k} {v}" for k, v in sorted(why.items())) or "none")
        if good == 0:
            self._fail(split)

    def write_quarantine(self, path: str | Path | None = None, keep_splits: tuple[str, ...] = ()) -> Path:
        """Write ``quarantine.jsonl`` (atomic): rows of this run, plus the rows already in the file
        for ``keep_splits`` (splits whose shards were reused, not rebuilt)."""
        path = Path(path) if path is not None else self.out_root / QUARANTINE_NAME
        old = [r for r in read_jsonl(path) if r.get("split") in keep_splits]
        new = [r for s in SPLITS if s not in keep_splits for r in self.rows[s]]
        rows = sorted(old + new, key=lambda r: (SPLITS.index(r["split"]), r["audio_filepath"], r["reason"]))
        path.parent.mkdir(parents=True, exist_ok=True)
        write_jsonl(path, rows)
        if new:
            log.warning("shard stage quarantined %d utterance(s) (%s); see %s", len(new),
                        ", ".join(f"{k} {v}" for k, v in sorted(Counter(r["reason"] for r in new).items())), path)
        return path
