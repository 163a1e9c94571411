"""Sentence corpus: thousands of distinct, normalisable sentences and unseen test sentences."""

import doctest
import random
import re

import pytest

import seqflow.text.sentences as sentences_module
from seqflow.errors import ConfigError
from seqflow.text.normalize import normalize_text
from seqflow.text.sentences import (
    fill_template, generate_sentences, load_fables, load_templates, split_sentences,
)

FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}


@pytest.fixture(scope="module")
def corpus():
    return generate_sentences(6000, seed=11)


def test_module_docstring_examples_run():
    result = doctest.testmod(sentences_module)
    assert result.attempted >= 3 and result.failed == 0


def test_6000_distinct_sentences_distinct_after_normalisation(corpus):
    assert len(corpus) == 6000
    norm = [normalize_text(s) for s in corpus]
    assert len(set(corpus)) == len(set(norm)) == 6000


def test_deterministic_for_a_seed_and_varies_with_it(corpus):
    assert generate_sentences(500, seed=11) == corpus[:500]
    assert generate_sentences(500, seed=12) != corpus[:500]
    assert generate_sentences(0, seed=1) == []


def test_realistic_mix_of_commands_numbers_times_digits_questions_prose(corpus):
    def share(pattern):
        return sum(bool(re.search(pattern, s)) for s in corpus) / len(corpus)
    assert share(r"^(Turn|Set|Switch|Play|Remind|Add|Dim|Lock|Start)\b") > 0.1   # commands
    assert share(r"\?$") > 0.08                                                 # questions
    assert share(r"[0-9]{1,2}:[0-9]{2}|[0-9] ?[ap]\.?m\b") > 0.05               # clock times
    assert share(r"[0-9]{3}[-.][0-9]{4}") > 0.01                                # phone numbers
    assert share(r"[$£€][0-9]") > 0.01 and share(r"[0-9]%") > 0.01              # money, percent
    assert share(r"[0-9](st|nd|rd|th)\b") > 0.01                                # ordinals / dates
    assert share(r"[0-9]") > 0.3 and share(r"[0-9]") < 0.7
    fables = set(load_fables())
    assert len(fables) > 150 and fables <= set(corpus)                           # all the prose used
    words = [len(s.split()) for s in corpus]
    assert sum(3 <= w <= 15 for w in words) / len(words) > 0.98
    assert sum(3 <= len(normalize_text(s).split()) <= 15 for s in corpus) / len(corpus) > 0.95


def test_every_template_fills_and_normalises():
    spec, rng = load_templates(), random.Random(0)
    assert abs(sum(spec["weights"].values()) - 1.0) < 1e-9
    for cat, templates in spec["templates"].items():
        assert cat in spec["weights"]
        for t in templates:
            for _ in range(5):
                s = fill_template(t, rng, spec["slots"])
                assert "{" not in s and normalize_text(s), (t, s)
    with pytest.raises(ConfigError, match="unknown slot"):
        fill_template("Say {nothing}.", rng, spec["slots"])


def test_large_requests_stay_distinct():
    s = generate_sentences(10000, seed=2)
    assert len({normalize_text(x) for x in s}) == 10000


def test_split_is_disjoint_complete_sized_and_deterministic(corpus):
    parts = split_sentences(corpus, FRACTIONS, seed=0)
    assert {k: len(v) for k, v in parts.items()} == {"train": 4800, "val": 600, "test": 600}
    assert sorted(sum(parts.values(), [])) == sorted(corpus)
    keys = {k: {normalize_text(s) for s in v} for k, v in parts.items()}
    assert not keys["train"] & keys["test"] and not keys["train"] & keys["val"]
    assert not keys["val"] & keys["test"]
    assert split_sentences(corpus, FRACTIONS, seed=0) == parts
    assert split_sentences(corpus, FRACTIONS, seed=1)["test"] != parts["test"]
    order = {s: i for i, s in enumerate(corpus)}
    assert all([order[s] for s in v] == sorted(order[s] for s in v) for v in parts.values())


def test_split_keeps_same_transcript_in_one_split():
    sents = ["Set a timer for 10 minutes.", "set a timer for ten minutes", "Turn off the lights.",
             "Call 555-0134.", "Call five five five zero one three four", "Hello there, friend."]
    parts = split_sentences(sents, {"train": 0.5, "test": 0.5}, seed=3)
    where = {s: k for k, v in parts.items() for s in v}
    assert where[sents[0]] == where[sents[1]] and where[sents[3]] == where[sents[4]]
    assert len(parts["train"]) + len(parts["test"]) == 6 and parts["train"] and parts["test"]


def test_split_small_inputs_and_bad_fractions():
    parts = split_sentences(["a b c", "d e f", "g h i"], FRACTIONS, seed=0)
    assert sorted(len(v) for v in parts.values()) == [1, 1, 1]
    assert split_sentences([], FRACTIONS) == {"train": [], "val": [], "test": []}
    with pytest.raises(ConfigError, match="sum to 1"):
        split_sentences(["a"], {"train": 0.7, "test": 0.2})
    with pytest.raises(ConfigError, match=">= 0"):
        split_sentences(["a"], {"train": 1.2, "test": -0.2})
