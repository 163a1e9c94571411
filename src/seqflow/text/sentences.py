"""The sentence corpus of the synthetic ASR default: thousands of distinct English sentences.

Sentences come from two bundled resources (written for seqflow, no downloads):

* ``resources/sentence_templates.json``: templates by category (commands to a home assistant,
  questions, times, numbers, dates, digit strings such as phone numbers, short story lines),
  with ``{slot}`` fields filled from word lists or by code (times like ``7:30 am``, prices like
  ``$4.99``, percentages, ordinals, years, phone numbers ``555-0134``, codes ``0472``);
* ``resources/fables.txt``: about 200 sentences of Aesop's fables retold in plain old-style
  prose (the fables are public domain; the wording is the project's own).

:func:`generate_sentences` draws a category by weight, fills a template (or takes the next fable
sentence), and keeps the sentence only if its *normalised* form is new, so no two sentences share
a transcript. Output is raw text (digits, punctuation, capitals); the caller normalises with
:func:`seqflow.text.normalize.normalize_text` (every generated sentence normalises). Text for the
TTS engine should be the normalised transcript, so that audio and label say the same words.

:func:`split_sentences` assigns sentences to disjoint splits, so test sentences are unseen in
training (the corpus is also split by voice elsewhere).

>>> s = generate_sentences(5, seed=0)
>>> len(set(s)) == 5 and s == generate_sentences(5, seed=0)
True
>>> parts = split_sentences(s, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=0)
>>> sorted((k, len(v)) for k, v in parts.items())
[('test', 1), ('train', 3), ('val', 1)]
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from importlib import resources

from seqflow.errors import ConfigError
from seqflow.text.normalize import TextNormalizationError, normalize_text

_SLOT = re.compile(r"\{(\w+)\}")
_DOUBLE_DOT = re.compile(r"(?<!\.)\.\.(?!\.)")
_SUFFIX = {1: "st", 2: "nd", 3: "rd"}
MAX_TRIES_PER_SENTENCE = 200  # consecutive duplicates before a category counts as exhausted


@lru_cache(maxsize=1)
def load_templates() -> dict:
    """The bundled ``sentence_templates.json`` (``weights``, ``templates``, ``slots``)."""
    text = resources.files("seqflow").joinpath("resources/sentence_templates.json").read_text("utf-8")
    return json.loads(text)


@lru_cache(maxsize=1)
def load_fables() -> tuple[str, ...]:
    """The bundled fable sentences (``resources/fables.txt``), in file order, comments skipped."""
    text = resources.files("seqflow").joinpath("resources/fables.txt").read_text("utf-8")
    return tuple(ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#"))


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else _SUFFIX.get(n % 10, 'th')}"


def _time(r: random.Random) -> str:
    h, m = r.randint(1, 12), r.choice([0, 5, 10, 15, 20, 30, 40, 45, 50, r.randint(1, 59)])
    style = r.random()
    if style < 0.35:
        return f"{h}:{m:02d} {r.choice(['am', 'pm', 'a.m.', 'p.m.'])}"
    if style < 0.55:
        return f"{h}{r.choice(['am', 'pm', ' am', ' pm', ' p.m.'])}"
    if style < 0.75:
        return f"{r.randint(13, 23) if r.random() < 0.5 else h}:{m:02d}"
    words = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
             "eleven", "twelve"]
    return r.choice([f"half past {words[h - 1]}", f"a quarter to {words[h - 1]}",
                     f"a quarter past {words[h - 1]}", f"{words[h - 1]} o'clock", "noon", "midnight"])


def _duration(r: random.Random) -> str:
    if r.random() < 0.05:
        return r.choice(["an hour and a half", "half an hour", "a minute and a half"])
    n = r.choice([1, 2, 3, 5, 10, 15, 20, 25, 30, 40, 45, 90, r.randint(2, 120)])
    unit = r.choice(["minute", "second", "hour"] if n < 30 else ["minute", "second"])
    if n == 1:
        return f"{r.choice(['1', 'an' if unit == 'hour' else 'a'])} {unit}"
    return f"{n} {unit}s"


def _price(r: random.Random) -> str:
    sym = r.choices("$£€", weights=[6, 2, 2])[0]
    whole = r.choice([r.randint(1, 20), r.randint(1, 200), r.randint(100, 2500)])
    return f"{sym}{whole:,}" if r.random() < 0.5 else f"{sym}{whole}.{r.randint(1, 99):02d}"


def _phone(r: random.Random) -> str:
    a, b, c = r.randint(200, 999), r.randint(200, 999), r.randint(0, 9999)
    return r.choice([f"555-{c:04d}", f"{a}-{b}-{c:04d}", f"({a}) {b}-{c:04d}", f"{a}.{b}.{c:04d}"])


def _code(r: random.Random) -> str:
    if r.random() < 0.5:
        return "0" + "".join(r.choice("0123456789") for _ in range(r.randint(3, 5)))
    return str(r.randint(1_000_000, 99_999_999))


_COMPUTED: dict[str, Callable[[random.Random], str]] = {
    "time": _time,
    "duration": _duration,
    "minutes_phrase": lambda r: f"{r.choice([5, 10, 15, r.randint(2, 30)])} minutes",
    "number": lambda r: str(r.choice([r.randint(2, 99), r.randint(100, 999)]))
    if r.random() < 0.8 else f"{r.randint(1000, 99999):,}",
    "small_number": lambda r: str(r.randint(2, 12)),
    "big_number": lambda r: r.choice([f"{r.randint(10, 999) * 1000:,}", f"{r.randint(2, 9)} million",
                                      f"{r.randint(1, 9)}.{r.randint(1, 9)} million"]),
    "decimal": lambda r: f"{r.randint(0, 30)}.{r.randint(1, 99) if r.random() < 0.4 else r.randint(1, 9)}",
    "percent": lambda r: f"{r.randint(1, 100)}%" if r.random() < 0.8 else f"{r.randint(1, 99)}.5%",
    "price": _price,
    "temperature": lambda r: str(r.randint(-10, 95) if r.random() < 0.3 else r.randint(55, 78)),
    "ordinal": lambda r: _ordinal(r.randint(1, 50)),
    "day_ordinal": lambda r: _ordinal(r.randint(1, 31)),
    "year": lambda r: str(r.randint(1850, 2030)),
    "phone": _phone,
    "code": _code,
    "pin": lambda r: " ".join(r.choice("0123456789") for _ in range(4)),
    "flight": lambda r: str(r.randint(10, 999)),
}


def fill_template(template: str, rng: random.Random, slots: Mapping[str, Sequence[str]]) -> str:
    """Replace every ``{slot}`` of ``template`` with a random value (word list or computed).

    Raises:
        ConfigError: a slot has neither a word list nor a generator.
    """
    def one(m: re.Match) -> str:
        name = m.group(1)
        if name in _COMPUTED:
            return _COMPUTED[name](rng)
        if name not in slots:
            raise ConfigError(f"sentence template {template!r}: unknown slot {{{name}}}")
        return rng.choice(slots[name])
    return _DOUBLE_DOT.sub(".", _SLOT.sub(one, template))  # "at 7 p.m.." -> "at 7 p.m."


def _key(sentence: str) -> str:
    try:
        return normalize_text(sentence)
    except TextNormalizationError:
        return " ".join(sentence.lower().split())


def generate_sentences(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct raw English sentences, deterministic for ``seed``.

    Categories are drawn with the weights in ``sentence_templates.json``; a category whose
    output keeps repeating (the fables run out after about 200) is dropped and the others
    fill in. Sentences are distinct after normalisation. At least 10,000 are available.

    Raises:
        ConfigError: ``n`` < 0, or more sentences asked for than the templates can make.
    """
    if n < 0:
        raise ConfigError(f"generate_sentences: n must be >= 0, got {n}")
    rng, spec = random.Random(seed), load_templates()
    fables = list(load_fables())
    rng.shuffle(fables)
    weights = dict(spec["weights"])
    out: list[str] = []
    seen: set[str] = set()
    misses = dict.fromkeys(weights, 0)
    while len(out) < n:
        if not weights:
            raise ConfigError(f"generate_sentences: templates exhausted after {len(out)} of {n} sentences")
        cat = rng.choices(list(weights), weights=list(weights.values()))[0]
        if cat == "fable":
            if not fables:
                del weights[cat]
                continue
            sentence = fables.pop()
        else:
            sentence = fill_template(rng.choice(spec["templates"][cat]), rng, spec["slots"])
        key = _key(sentence)
        if key in seen:
            misses[cat] += 1
            if misses[cat] >= MAX_TRIES_PER_SENTENCE:
                del weights[cat]
            continue
        misses[cat] = 0
        seen.add(key)
        out.append(sentence)
    return out


def split_sentences(sentences: Sequence[str], fractions: Mapping[str, float],
                    seed: int = 0) -> dict[str, list[str]]:
    """Assign ``sentences`` to disjoint splits in the given ``fractions`` (deterministic).

    Sentences with the same normalised form always land in the same split. Split sizes follow
    the largest-remainder method over the distinct sentences; every split with a positive
    fraction gets at least one when there are enough. Within a split, input order is kept.

    Args:
        sentences: raw or normalised sentences.
        fractions: split name → fraction, non-negative, summing to 1 (±1e-6).
        seed: shuffling seed.

    Returns:
        split name → list of sentences, for every name in ``fractions``.

    Raises:
        ConfigError: negative fractions or a sum other than 1.
    """
    names = list(fractions)
    fr = [float(fractions[k]) for k in names]
    if not names or min(fr) < 0 or abs(sum(fr) - 1.0) > 1e-6:
        raise ConfigError(f"split fractions must be >= 0 and sum to 1, got {dict(fractions)}")
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(sentences):
        groups.setdefault(_key(s), []).append(i)
    keys = list(groups)
    random.Random(seed).shuffle(keys)
    total = len(keys)
    counts = [int(f * total) for f in fr]
    by_remainder = sorted(range(len(names)), key=lambda j: (-(fr[j] * total - counts[j]), j))
    for j in by_remainder[: total - sum(counts)]:
        counts[j] += 1
    for j in range(len(names)):  # lend one to an empty split with a positive fraction
        if counts[j] == 0 and fr[j] > 0:
            donor = max(range(len(names)), key=lambda d: counts[d])
            if counts[donor] > 1:
                counts[donor] -= 1
                counts[j] += 1
    out: dict[str, list[str]] = {}
    start = 0
    for name, count in zip(names, counts):
        idx = sorted(i for k in keys[start:start + count] for i in groups[k])
        out[name] = [sentences[i] for i in idx]
        start += count
    return out
