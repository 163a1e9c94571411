"""Transcript normalisation: documented rules, the [a-z' ] alphabet, and clear errors."""

import doctest

import pytest

import seqflow.text.normalize as normalize_module
from seqflow.errors import SeqflowError
from seqflow.text.normalize import ALPHABET, TextNormalizationError, normalize_text
from seqflow.text.sentences import generate_sentences


def test_module_docstring_examples_run():
    result = doctest.testmod(normalize_module)
    assert result.attempted >= 8 and result.failed == 0


@pytest.mark.parametrize("raw, expected", [
    ("Set an alarm for 7:30 am.", "set an alarm for seven thirty a m"),
    ("It's 3.5%", "it's three point five percent"),
    ("$20", "twenty dollars"),
    ("1st", "first"),
    ("in 1999", "in nineteen ninety nine"),
    ("a well-known fact", "a well known fact"),
    ("It’s “quoted” – isn‘t it?", "it's quoted isn't it"),
    ("café crème, naïve Ærø straße", "cafe creme naive aero strasse"),
    ("Rock & Roll @ home", "rock and roll at home"),
    ("$4.99", "four dollars ninety nine cents"),
    ("$1", "one dollar"),
    ("$0.50", "fifty cents"),
    ("£5.01", "five pounds one penny"),
    ("€2,500", "two thousand five hundred euros"),
    ("$1.5 million", "one point five million dollars"),
    ("$1999", "one thousand nine hundred and ninety nine dollars"),
    ("20¢", "twenty cents"),
    ("Call 555-0134", "call five five five zero one three four"),
    ("(555) 201-3344", "five five five two zero one three three four four"),
    ("555.201.3344", "five five five two zero one three three four four"),
    ("7:05 p.m.", "seven oh five p m"),
    ("12:00", "twelve o'clock"),
    ("13:45", "thirteen forty five"),
    ("7am", "seven a m"),
    ("at 9 PM.", "at nine p m"),
    ("22nd", "twenty second"),
    ("the 101st time", "the one hundred and first time"),
    ("1,250 people", "one thousand two hundred and fifty people"),
    ("3.14", "three point one four"),
    ("code 0472", "code zero four seven two"),
    ("12345678", "one two three four five six seven eight"),
    ("50000 steps", "fifty thousand steps"),
    ("2024", "twenty twenty four"),
    ("1905", "nineteen oh five"),
    ("1000", "one thousand"),
    ("the 1990s and the '80s", "the nineteen nineties and the eighties"),
    ("-5 degrees", "minus five degrees"),
    ("72°", "seventy two degrees"),
    ("1990-1995", "nineteen ninety nineteen ninety five"),
    ("mp3", "mp three"),
    ("100 %", "one hundred percent"),
    ("don't 'quote' the dogs'.", "don't quote the dogs"),
    ("  Tabs\tand\nnew   lines ", "tabs and new lines"),
    ("HELLO...World!?", "hello world"),
])
def test_documented_rules(raw, expected):
    assert normalize_text(raw) == expected


@pytest.mark.parametrize("raw, chars", [
    ("日本", ("日", "本")),
    ("hello 😀", ("😀",)),
    ("½ cup", ("⁄",)),          # NFKC: one-half -> 1⁄2 (fraction slash stays)
    ("cost $ lots", ("$",)),     # a currency sign without an amount
    ("Ελλάδα", ("δ", "α", "λ", "ε")),
])
def test_leftover_characters_raise_naming_them(raw, chars):
    with pytest.raises(TextNormalizationError) as info:
        normalize_text(raw)
    err = info.value
    assert isinstance(err, SeqflowError)
    assert err.reason == "unnormalisable_text" and err.text == raw
    assert set(err.chars) == set(chars) and list(err.chars) == sorted(err.chars)
    for c in chars:
        assert repr(c) in str(err)


@pytest.mark.parametrize("raw", ["", "   ", "...", "—", "''"])
def test_empty_result_raises_empty_text(raw):
    with pytest.raises(TextNormalizationError) as info:
        normalize_text(raw)
    assert info.value.reason == "empty_text" and info.value.chars == ()


def test_generated_sentences_normalise_into_the_alphabet_and_are_idempotent():
    for raw in generate_sentences(600, seed=7):
        out = normalize_text(raw)
        assert set(out) <= ALPHABET, raw
        assert out == out.strip() and "  " not in out
        assert normalize_text(out) == out, raw
