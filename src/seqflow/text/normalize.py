"""Transcript normalisation: raw English text → the spoken form over ``[a-z' ]``.

Every transcript an ASR model trains on or is scored against goes through
:func:`normalize_text`, so that labels, hypotheses and references share one alphabet
(characters a–z, the apostrophe and single spaces). The rules, applied in this order:

1. Unicode NFKC; curly quotes and primes become ``'``; dashes become spaces; accented letters
   are folded (NFKD, combining marks dropped; ``ß æ œ ø ł đ ð þ`` spelled out); lower case.
2. Symbols read aloud: ``&`` → and, ``@`` → at, ``+`` → plus, ``=`` → equals, ``°`` → degrees.
3. Money: ``$ £ € ¥`` before an amount → the amount, an optional scale word, then the unit
   (``$20`` → twenty dollars, ``$4.99`` → four dollars ninety nine cents, ``$1.5 million`` →
   one point five million dollars); ``20¢`` → twenty cents.
4. Phone numbers (``555-0134``, ``(555) 201-3344``, ``555.201.3344``) are read digit by digit.
5. Times: ``7:30`` → seven thirty, ``7:05`` → seven oh five, ``7:00`` → seven o'clock,
   ``7am``/``7 a.m.``/``7:30 pm`` → … a m / p m.
6. Percent: ``3.5%`` → three point five percent.  Ordinals: ``1st`` → first, ``22nd`` →
   twenty second.  Decades: ``1990s``/``'80s`` → nineteen nineties / eighties.  Negative
   numbers: ``-5`` → minus five.
7. Decimals are read "point" then digit by digit (``3.14`` → three point one four); thousands
   separators are dropped (``1,250`` → one thousand two hundred and fifty).
8. Other digit runs: a leading zero or seven or more digits → digit by digit (codes, numbers
   written without separators); four digits from 1100 to 2099 → a year (``1999`` → nineteen
   ninety nine, ``2024`` → twenty twenty four); otherwise a cardinal (num2words, British "and").
9. Apostrophes are kept only between letters (``it's``, ``o'clock``); all other punctuation
   (Unicode category P*) becomes a space; whitespace is collapsed.

Whatever is left outside ``[a-z' ]`` (other scripts, emoji, unhandled symbols) raises
:class:`TextNormalizationError` naming the characters, as does an empty result; callers
quarantine the utterance with the error's ``reason`` instead of training on it.

Numbers are spelled by num2words (https://github.com/savoirfairelinux/num2words).

>>> normalize_text("Set an alarm for 7:30 am.")
'set an alarm for seven thirty a m'
>>> normalize_text("It’s 3.5%")
"it's three point five percent"
>>> normalize_text("$20")
'twenty dollars'
>>> normalize_text("the 1st time, in 1999")
'the first time in nineteen ninety nine'
>>> normalize_text("Call 555-0134 — a well-known café")
'call five five five zero one three four a well known cafe'
>>> normalize_text("Rock & Roll @ 7pm")
'rock and roll at seven p m'
>>> normalize_text("Back in the 1990s")
'back in the nineteen nineties'
>>> try:
...     normalize_text("日本 😀")
... except TextNormalizationError as e:
...     print(e.reason, e.chars)
unnormalisable_text ('日', '本', '😀')
"""

from __future__ import annotations

import re
import unicodedata

from num2words import num2words

from seqflow.errors import SeqflowError

ALPHABET = frozenset("abcdefghijklmnopqrstuvwxyz' ")
_DIGITS = "zero one two three four five six seven eight nine".split()
_QUOTES = dict.fromkeys(map(ord, "‘’‚‛′ʼʹ`´"), "'") | dict.fromkeys(map(ord, "“”„‟″"), '"')
_DASHES = dict.fromkeys(map(ord, "-‐‑‒–—―−"), " ")
_LETTERS = {"ß": "ss", "æ": "ae", "œ": "oe", "ø": "o", "ł": "l", "đ": "d", "ð": "d", "þ": "th",
            "ı": "i"}
_SYMBOLS = {"&": " and ", "@": " at ", "+": " plus ", "=": " equals ", "°": " degrees "}
_CURRENCY = {"$": ("dollar", "dollars", "cent", "cents"), "£": ("pound", "pounds", "penny", "pence"),
             "€": ("euro", "euros", "cent", "cents"), "¥": ("yen", "yen", "sen", "sen")}
_ASCII_PUNCT = {i: " " for i in range(128)
                if unicodedata.category(chr(i)).startswith("P") and chr(i) != "'"}
_SCALES = "thousand|million|billion|trillion"

_NUM = r"[0-9]+(?:,[0-9]{3})*(?:\.[0-9]+)?"  # 1,250.75
_RE_MONEY = re.compile(rf"([$£€¥])\s?({_NUM})(?:\s?({_SCALES})\b)?")
_RE_CENTS = re.compile(r"(?<![0-9.,])([0-9]+)\s?¢")
_RE_PHONE = re.compile(r"(?<![0-9])(?:\(([0-9]{3})\)\s?|([0-9]{3})[-. ])?([0-9]{3})[-.]([0-9]{4})(?![0-9])")
_RE_CLOCK = re.compile(r"(?<![0-9:])([0-9]{1,2}):([0-9]{2})(?![0-9])(?:\s?([ap])\.?m\b\.?)?")
_RE_AMPM = re.compile(r"(?<![0-9.,:])([0-9]{1,2})\s?([ap])\.?m\b\.?")
_RE_PERCENT = re.compile(rf"(?<![0-9])({_NUM})\s?%")
_RE_ORDINAL = re.compile(r"(?<![0-9])([0-9]+(?:,[0-9]{3})*)(st|nd|rd|th)\b")
_RE_DECADE = re.compile(r"(?<![0-9])'?((?:1[1-9]|20)?[0-9]0)'?s\b")
_RE_MINUS = re.compile(r"(?<![0-9a-z])-(?=[0-9])")
_RE_NUMBER = re.compile(rf"(?<![0-9]){_NUM}(?![0-9])")
_RE_LONE_QUOTE = re.compile(r"(?<![a-z])'|'(?![a-z])")


class TextNormalizationError(SeqflowError):
    """A transcript cannot be brought to the ``[a-z' ]`` alphabet, or normalises to nothing.

    Attributes:
        text: the raw input.
        reason: ``unnormalisable_text`` (characters left over) or ``empty_text``.
        chars: the offending characters, sorted (empty for ``empty_text``).
    """

    def __init__(self, text: str, reason: str, chars: tuple[str, ...] = ()) -> None:
        self.text, self.reason, self.chars = text, reason, chars
        what = f"characters {', '.join(map(repr, chars))} in {text!r}" if chars else repr(text)
        super().__init__(f"{reason}: {what}")


def digits_to_words(digits: str) -> str:
    """Read a digit string one digit at a time: ``"0134"`` → ``"zero one three four"``."""
    return " ".join(_DIGITS[int(d)] for d in digits)


def number_to_words(token: str, years: bool = True) -> str:
    """Spell one number token (``"1,250"``, ``"3.14"``, ``"0042"``, ``"1999"``) by rules 7–8;
    ``years=False`` reads four-digit numbers as cardinals (used for money)."""
    if "," in token:
        years, token = False, token.replace(",", "")
    if "." in token:
        whole, frac = token.split(".", 1)
        return f"{number_to_words(whole)} point {digits_to_words(frac)}"
    if len(token) > 1 and token[0] == "0" or len(token) >= 7:
        return digits_to_words(token)
    value = int(token)
    if years and len(token) == 4 and 1100 <= value <= 2099:
        return num2words(value, to="year")
    return num2words(value)


def _money(m: re.Match) -> str:
    one, many, sub_one, sub_many = _CURRENCY[m.group(1)]
    amount, scale = m.group(2).replace(",", ""), m.group(3)
    if scale:
        return f" {number_to_words(amount, years=False)} {scale} {many} "
    whole, _, frac = amount.partition(".")
    cents = int(frac.ljust(2, "0")[:2]) if frac and len(frac) <= 2 else None
    if frac and cents is None:  # "$1.125": read as a decimal amount
        return f" {number_to_words(amount, years=False)} {many} "
    parts = []
    if int(whole) or not cents:
        parts.append(f"{number_to_words(whole, years=False)} {one if int(whole) == 1 else many}")
    if cents:
        parts.append(f"{num2words(cents)} {sub_one if cents == 1 else sub_many}")
    return f" {' '.join(parts)} "


def _clock(m: re.Match) -> str:
    hour, minute, ampm = int(m.group(1)), int(m.group(2)), m.group(3)
    if minute == 0:
        words = num2words(hour) + ("" if ampm else " o'clock")
    elif minute < 10:
        words = f"{num2words(hour)} oh {num2words(minute)}"
    else:
        words = f"{num2words(hour)} {num2words(minute)}"
    return f" {words} {ampm + ' m' if ampm else ''} "


def _phone(m: re.Match) -> str:
    return " " + digits_to_words("".join(g for g in m.groups() if g)) + " "


def _decade(m: re.Match) -> str:
    words = number_to_words(m.group(1)).replace("-", " ").split()
    last = words[-1][:-1] + "ies" if words[-1].endswith("y") else words[-1] + "s"
    return " " + " ".join(words[:-1] + [last]) + " "


def _fold(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).translate(_QUOTES).lower()
    if text.isascii():
        return text
    text = "".join(_LETTERS.get(c, c) for c in text)
    text = unicodedata.normalize("NFKD", text)
    return "".join(c for c in text if not unicodedata.combining(c))


def normalize_text(text: str) -> str:
    """Normalise one raw transcript to lower-case spoken words over ``[a-z' ]`` (rules above).

    Args:
        text: raw transcript in any Unicode form.

    Returns:
        the normalised transcript: words separated by single spaces, no leading/trailing space.

    Raises:
        TextNormalizationError: characters outside ``[a-z' ]`` remain (``reason`` =
            ``unnormalisable_text``, ``chars`` lists them) or the result is empty
            (``reason`` = ``empty_text``).
    """
    raw = str(text)
    s = _fold(raw)
    for sym, words in _SYMBOLS.items():
        s = s.replace(sym, words)
    s = _RE_MONEY.sub(_money, s)
    s = _RE_CENTS.sub(lambda m: f" {number_to_words(m.group(1))} cents ", s)
    s = _RE_PHONE.sub(_phone, s)
    s = _RE_CLOCK.sub(_clock, s)
    s = _RE_AMPM.sub(lambda m: f" {number_to_words(m.group(1))} {m.group(2)} m ", s)
    s = _RE_PERCENT.sub(lambda m: f" {number_to_words(m.group(1), years=False)} percent ", s)
    s = s.replace("%", " percent ")
    s = _RE_ORDINAL.sub(lambda m: f" {num2words(int(m.group(1).replace(',', '')), to='ordinal')} ", s)
    s = _RE_DECADE.sub(_decade, s)
    s = _RE_MINUS.sub(" minus ", s)
    s = _RE_NUMBER.sub(lambda m: f" {number_to_words(m.group(0))} ", s)
    s = s.translate(_DASHES)
    s = _RE_LONE_QUOTE.sub(" ", s)
    s = s.translate(_ASCII_PUNCT)
    if not s.isascii():
        s = "".join(" " if unicodedata.category(c).startswith("P") and c != "'" else c for c in s)
    s = " ".join(s.split())
    bad = sorted(set(s) - ALPHABET)
    if bad:
        raise TextNormalizationError(raw, "unnormalisable_text", tuple(bad))
    if not s:
        raise TextNormalizationError(raw, "empty_text")
    return s
