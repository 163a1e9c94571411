"""The sentence part of the ``synthetic`` source: which sentence each voice says, for speech recognition.

The synthetic corpus always carries a sentence corpus as well (one corpus version serves every
model): ``data.num_sentences`` distinct sentences from :func:`seqflow.text.sentences.generate_sentences`
are split disjointly by ``data.sentence_split`` (test sentences are never heard in training), and each
sentence is spoken once, by a random voice *of the same split* (voices are split disjointly too, so
test voices and test sentences are both unseen), at a random rate and pitch in ``data.rates_wpm`` /
``data.pitches``. Voices get balanced shares of their split's sentences.

The TTS engine reads the *normalised* sentence (:func:`seqflow.text.normalize.normalize_text`), so the
audio says exactly the transcript; the manifest keeps the raw sentence in ``text`` (validate
normalises it again) and the normalised form in ``extra["normalized"]``.

This module only plans (pure, no audio); :mod:`seqflow.data.synthetic` renders the plan in
:attr:`SentenceJob` order: by split, then voice, then sentence, resetting espeak-ng once per voice.

>>> spec = {"num_sentences": 10, "sentence_split": {"train": 0.8, "val": 0.1, "test": 0.1},
...         "rates_wpm": [130, 200], "pitches": [25, 75]}
>>> voices = {"train": ["en-us+m1", "en-us+f2"], "val": ["en-gb+m1"], "test": ["en-gb+f2"]}
>>> jobs = plan_sentences(spec, voices, seed=0)
>>> [(j.split, j.voice) for j in jobs if j.split != "train"]
[('val', 'en-gb+m1'), ('test', 'en-gb+f2')]
>>> jobs[0].rel
'audio/train/utterance/train-utterance-000000.flac'
"""

from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import dataclass

import numpy as np

from seqflow.errors import ConfigError
from seqflow.text.normalize import TextNormalizationError, normalize_text
from seqflow.text.sentences import generate_sentences, split_sentences

SPLITS = ("train", "val", "test")
SENTENCE_KEYS = ("num_sentences", "sentence_split")
MAX_SENTENCES = 10_000  # generate_sentences guarantees at least this many distinct sentences


@dataclass(frozen=True)
class SentenceJob:
    """One sentence render: ``index`` numbers the sentence within its split (file name)."""

    split: str
    index: int
    text: str  # raw sentence (manifest ``text``)
    normalized: str  # what the TTS engine reads
    voice: str
    rate_wpm: int
    pitch: int

    @property
    def key(self) -> str:
        """Sample key, e.g. ``train-utterance-000042``."""
        return f"{self.split}-utterance-{self.index:06d}"

    @property
    def rel(self) -> str:
        """Audio path relative to the corpus root."""
        return f"audio/{self.split}/utterance/{self.key}.flac"


def check_sentence_config(spec: dict) -> dict:
    """Check and normalise ``data.num_sentences`` and ``data.sentence_split`` in ``spec`` (in place).

    Raises:
        ConfigError: ``num_sentences`` not an integer in ``[0, 10000]``; ``sentence_split`` lacking a
            positive fraction for one of train/val/test.
    """
    n = spec["num_sentences"]
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_SENTENCES:
        raise ConfigError(f"data.num_sentences must be an integer in [0, {MAX_SENTENCES}] (0 disables the "
                          f"sentence corpus), got {n!r}")
    split = spec["sentence_split"] or {}
    if set(split) != set(SPLITS) or any(isinstance(split[s], bool) or not isinstance(split[s], (int, float))
                                        or split[s] <= 0 for s in SPLITS):
        raise ConfigError(f"data.sentence_split must give a positive fraction for each of {SPLITS}, got {split}")
    total = sum(float(split[s]) for s in SPLITS)
    spec["sentence_split"] = {s: float(split[s]) / total for s in SPLITS}
    return spec


def _seed(*parts) -> np.random.Generator:
    return np.random.default_rng([zlib.crc32(repr(p).encode()) for p in parts])


def plan_sentences(spec: dict, voices: dict[str, list[str]], seed: int) -> list[SentenceJob]:
    """Choose, split and assign the sentences; deterministic for ``spec`` and ``seed``.

    Args:
        spec: checked synthetic config (``num_sentences``, ``sentence_split``, ``rates_wpm``, ``pitches``).
        voices: split -> voice names (disjoint, from :func:`seqflow.data.synthetic.split_voices`).
        seed: global seed.

    Returns:
        jobs in render order (split, voice, sentence index); empty when ``num_sentences`` is 0.

    Raises:
        ConfigError: a split with sentences has no voice.
        TextNormalizationError: a generated sentence does not normalise (a generator bug).
    """
    n = spec["num_sentences"]
    if n == 0:
        return []
    parts = split_sentences(generate_sentences(n, seed), spec["sentence_split"], seed=seed)
    lo_r, hi_r = spec["rates_wpm"]
    lo_p, hi_p = spec["pitches"]
    jobs: list[SentenceJob] = []
    for split in SPLITS:
        texts, names = parts[split], voices[split]
        if texts and not names:
            raise ConfigError(f"no {split} voice to speak the {split} sentences (data.num_voices too small)")
        rng = _seed(seed, "sentences", split)
        owner = np.arange(len(texts)) % max(1, len(names))
        rng.shuffle(owner)  # balanced shares, random assignment
        rates = rng.integers(lo_r, hi_r + 1, size=len(texts))
        pitches = rng.integers(lo_p, hi_p + 1, size=len(texts))
        split_jobs = [SentenceJob(split, i, t, normalize_text(t), names[int(owner[i])], int(rates[i]),
                                  int(pitches[i])) for i, t in enumerate(texts)]
        jobs += sorted(split_jobs, key=lambda j: (j.voice, j.index))
    return jobs


def extra_sentences(spec: dict, count: int, seed: int) -> list[tuple[str, str]]:
    """``count`` more sentences ``(raw, normalised)`` for a second engine (Piper): the ones
    :func:`generate_sentences` makes after the first ``data.num_sentences`` for ``seed``, so they
    are distinct from every sentence of :func:`plan_sentences` (test sentences included).

    Raises:
        ConfigError: ``num_sentences + count`` exceeds what the templates can make.
    """
    if count <= 0:
        return []
    texts = generate_sentences(spec["num_sentences"] + count, seed)[spec["num_sentences"]:]
    return [(t, normalize_text(t)) for t in texts]


def plan_digest(jobs: list[SentenceJob]) -> str:
    """sha256 of the whole plan (texts, voices, rates, pitches): part of the corpus fingerprint, so a
    change in the sentence generator or the normaliser triggers a rebuild."""
    blob = json.dumps([[j.split, j.index, j.text, j.normalized, j.voice, j.rate_wpm, j.pitch] for j in jobs],
                      ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def contains_words(text: str, phrase: str) -> bool:
    """Whether normalised ``text`` contains normalised ``phrase`` as whole words."""
    try:
        words = normalize_text(phrase)
    except TextNormalizationError:
        return False
    return f" {words} " in f" {text} "


def sentence_summary(jobs: list[SentenceJob], durations: dict[str, float]) -> dict:
    """``{split: {"count", "hours", "voices"}}`` for ``corpus.json``; ``durations``: key -> seconds."""
    out = {}
    for split in SPLITS:
        mine = [j for j in jobs if j.split == split]
        seconds = sum(durations.get(j.key, 0.0) for j in mine)
        out[split] = {"count": len(mine), "hours": round(seconds / 3600.0, 4),
                      "voices": len({j.voice for j in mine})}
    return out
