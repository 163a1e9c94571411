"""Hard negatives made from the trigger phrase's own phonemes: partial phrases, one-phoneme edits, rhymes.

:func:`seqflow.data.confusables.confusable_words` finds lexicon words that sound like the
trigger ("lexicon" sound-alikes). This module adds three kinds that a detector confuses even
more easily, all negatives with source ``confusable`` in the corpus:

- ``partial``: a proper part of the phrase. For a multi-word trigger every contiguous run of
  its words alone ("hey", "jarvis" for "hey jarvis"), then leading and trailing ~2/3 and ~1/2
  of its phonemes ("[[h'eI dZ'A@v]]", "hey jarv"); for one word only the phoneme parts
  ("[['aktI#v]]", "activ"; "[[t'I#v,eIt]]", "tivate").
- ``edit``: the pronunciation with one phoneme substituted by a near one (vowel↔vowel,
  voiced↔voiceless and the other consonant groups of :mod:`seqflow.data.confusables`) or one
  consonant / unstressed vowel deleted ("[[h'eI dZ'A@vIz]]", "[['atI#v,eIt]]").
- ``rhyme``: lexicon words sharing the trigger's final stressed vowel and everything after it
  but differing before it ("motivate" for "activate"); for a phrase, one word replaced by a
  rhyme of it, the last word first ("day jarvis").

Parts and edits are not English words: they are written as espeak-ng phoneme mnemonics in
``[[...]]``, which espeak-ng renders as written, :class:`seqflow.data.piper_tts.PiperTTS`
renders after converting them to IPA, and festival cannot read (:func:`seqflow.data.tts.is_phoneme_text`
tells them apart). Each one is checked by phonemizing it back: it must give exactly the
phonemes it was built from. Nothing returned sounds like the trigger itself
(:func:`~seqflow.data.confusables.sounds_like_trigger`), and no two items (nor an item and an
``avoid`` text) have the same phonemes. Deterministic for equal inputs; uses only the bundled
espeak-ng and lexicon (phonemizing the 3000 words takes ~0.1 s).

>>> [h["text"] for h in hard_negatives("hey jarvis", load_lexicon(), {"partials": 2})]   # doctest: +SKIP
['hey', 'jarvis']
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

from seqflow.data.confusables import (_ipa, _is_vowel, _sub_cost, _tokens, normalise_text,
                                      phoneme_distance, phoneme_tokens, sounds_like_trigger)
from seqflow.data.tts import PHONEME_SEP, EspeakTTS
from seqflow.errors import SeqflowError

KINDS = ("lexicon", "partial", "edit", "rhyme")  # the ``kind`` of a sound-alike
COUNT_KEYS = {"partials": "partial", "phoneme_edits": "edit", "rhymes": "rhyme"}  # data.hard_negatives.*
_STRESS_ASCII, _STRESS_IPA = "',", "ˈˌ"
_NEAR = 0.5  # the most a substitution may cost (_sub_cost): vowel↔vowel 0.3/0.5, consonant group 0.4
_MIN_USES = 10  # a substitute phoneme must occur this often in the lexicon (skips rare allophones)


@dataclass(frozen=True)
class Phone:
    """One phoneme: espeak-ng ASCII mnemonic and IPA, both with their stress mark (``'eI``, ``ˈeɪ``)."""

    ascii: str
    ipa: str

    @property
    def norm(self) -> str:
        """Comparable form (:func:`~seqflow.data.confusables.phoneme_tokens`); ``""`` for a marker."""
        return "".join(phoneme_tokens(self.ipa))

    @property
    def stressed(self) -> bool:
        """Carries primary or secondary stress."""
        return self.ipa[:1] in _STRESS_IPA

    def restressed(self, primary: bool) -> "Phone":
        """The same phoneme with primary stress (``primary``) or none."""
        a, i = self.ascii.lstrip(_STRESS_ASCII), self.ipa.lstrip(_STRESS_IPA)
        return Phone("'" + a, "ˈ" + i) if primary else Phone(a, i)


Words = tuple[tuple[Phone, ...], ...]


@lru_cache(maxsize=65536)
def pronounce(text: str) -> Words:
    """espeak-ng (en-us) pronunciation of ``text`` as words of :class:`Phone` (ASCII and IPA aligned).

    Raises:
        SeqflowError: the ASCII and IPA outputs of espeak-ng do not align (never seen in English).
    """
    tts = EspeakTTS()
    asc, ipa = tts.phonemes(text, ipa=False).split(), tts.phonemes(text).split()
    split_a, split_i = [w.split(PHONEME_SEP) for w in asc], [w.split(PHONEME_SEP) for w in ipa]
    if [len(w) for w in split_a] != [len(w) for w in split_i]:
        raise SeqflowError(f"espeak-ng phonemes of {text!r} do not align: {asc} vs {ipa}")
    out = [tuple(Phone(a, i) for a, i in zip(pa, pi) if a) for pa, pi in zip(split_a, split_i)]
    return tuple(w for w in out if w)


def phoneme_text(words: Words) -> str:
    """espeak-ng phoneme input for ``words``: ``"[[h'eI dZ'A@vIs]]"``."""
    return "[[" + " ".join("".join(p.ascii for p in w) for w in words if w) + "]]"


def _norms(words: Words) -> tuple[str, ...]:
    return tuple(p.norm for w in words for p in w if p.norm)


def _regroup(flat: list[tuple[int, Phone]]) -> Words:
    out: dict[int, list[Phone]] = {}
    for wi, p in flat:
        out.setdefault(wi, []).append(p)
    return tuple(tuple(v) for _, v in sorted(out.items()))


def _with_stress(words: Words) -> Words:
    """Said alone, a part needs a primary stress: promote the first stressed (else first) vowel."""
    flat = [(wi, p) for wi, w in enumerate(words) for p in w]
    if any(p.ipa.startswith("ˈ") for _, p in flat):
        return words
    vowels = [k for k, (_, p) in enumerate(flat) if _is_vowel(p.norm)]
    k = next((k for k in vowels if flat[k][1].stressed), vowels[0])
    flat[k] = (flat[k][0], flat[k][1].restressed(True))
    return _regroup(flat)


def _spread(n: int) -> list[int]:
    """Positions ``0..n-1``, first and last first, then from the middle outwards."""
    mid = sorted(range(1, n - 1), key=lambda i: (abs(i - (n - 1) / 2), i))
    return list(dict.fromkeys([0, n - 1, *mid]))[:n] if n else []


@lru_cache(maxsize=8)
def _inventory(lexicon: tuple[str, ...]) -> tuple[tuple[str, str, str, int], ...]:
    """Phonemes of the lexicon: ``(norm, ascii, ipa, uses)``, the commonest mnemonic per ``norm``."""
    uses: Counter = Counter()
    for w in lexicon:
        for word in pronounce(w):
            for p in word:
                base = p.restressed(False)
                if base.norm:
                    uses[(base.norm, base.ascii, base.ipa)] += 1
    best: dict[str, tuple[str, str, str, int]] = {}
    for (norm, a, i), n in sorted(uses.items(), key=lambda kv: (-kv[1], kv[0])):
        syllabic = _is_vowel(norm) and any(not _is_vowel(c) and c != "ɹ" for c in norm)  # "əl": not a vowel
        if n >= _MIN_USES and norm not in best and not syllabic:
            best[norm] = (norm, a, i, n)
    return tuple(sorted(best.values()))


class _Picker:
    """Collects items whose phonemes differ from the trigger's and from every item taken so far."""

    def __init__(self, trigger: str, avoid: list[str]) -> None:
        self.trigger, self.out, self.seen = trigger, [], {_tokens(trigger)}
        self.seen.update(_tokens(a) for a in avoid)

    def take(self, text: str, kind: str, want: tuple[str, ...] | None = None) -> bool:
        """Add ``text`` unless it sounds like the trigger, repeats phonemes, or (phoneme input)
        does not phonemize back to ``want``."""
        got = _tokens(text)
        if got in self.seen or sounds_like_trigger(text, self.trigger) or (want is not None and got != want):
            return False
        self.seen.add(got)
        self.out.append({"text": text, "kind": kind})
        return True


def _partials(trig: str, words: Words) -> list[tuple[str, tuple[str, ...] | None]]:
    names = trig.split()
    out: list[tuple[str, tuple[str, ...] | None]] = []
    for size in range(len(names) - 1, 0, -1):  # contiguous runs of words, longest first
        out += [(" ".join(names[i: i + size]), None) for i in range(len(names) - size + 1)]
    flat = [(wi, p) for wi, w in enumerate(words) for p in w]
    n = len(flat)
    sizes = sorted(range(2, n), key=lambda L: (abs(L - 2 * n / 3), -L))  # ~2/3 of the phonemes first
    heads = [_regroup(flat[:L]) for L in sizes]
    tails = [_regroup(flat[n - L:]) for L in sizes]
    for part in (p for pair in zip(heads, tails) for p in pair):
        if any(_is_vowel(p.norm) for w in part for p in w):
            part = _with_stress(part)
            out.append((phoneme_text(part), _norms(part)))
    return out


def _edits(words: Words, lexicon: tuple[str, ...], n: int) -> list[tuple[str, tuple[str, ...]]]:
    flat = [(wi, p) for wi, w in enumerate(words) for p in w]
    pos = [k for k in _spread(len(flat)) if flat[k][1].norm]
    inventory = _inventory(lexicon)

    def edited(k: int, new: Phone | None) -> tuple[str, tuple[str, ...]]:
        out = _regroup([(wi, new if j == k else p) for j, (wi, p) in enumerate(flat) if j != k or new])
        return phoneme_text(out), _norms(out)

    subs: dict[int, list[tuple[str, tuple[str, ...]]]] = {}
    for k in pos:
        p = flat[k][1]
        near = sorted((_sub_cost(p.norm, norm), -uses, a, i) for norm, a, i, uses in inventory
                      if norm != p.norm and _sub_cost(p.norm, norm) <= _NEAR)
        mark_a = p.ascii[: len(p.ascii) - len(p.ascii.lstrip(_STRESS_ASCII))]  # keep the stress
        mark_i = p.ipa[:1] if p.stressed else ""
        subs[k] = [edited(k, Phone(mark_a + a, mark_i + i)) for _, _, a, i in near]
    rounds = max((len(v) for v in subs.values()), default=0)
    sub_list = [subs[k][r] for r in range(rounds) for k in pos if r < len(subs[k])]
    vowels_left = {wi: sum(_is_vowel(p.norm) for w2, p in flat if w2 == wi) for wi in range(len(words))}
    dels = [edited(k, None) for k in pos if len(words[flat[k][0]]) > 1 and not flat[k][1].stressed
            and (not _is_vowel(flat[k][1].norm) or vowels_left[flat[k][0]] > 1)]
    n_del = min(n // 3, len(dels))
    return dels[:n_del] + sub_list + dels[n_del:]


def _tails(text: str) -> list[tuple[tuple[str, ...], tuple[str, ...]] | None]:
    """Per word of ``text`` as said in it: ``(phonemes before, phonemes from)`` its last stressed
    vowel (normalised), or None for a word without stress ("a" in "a jarvis")."""
    out = []
    for word in _ipa(text).split():
        strict = [t for t in word.split(PHONEME_SEP) if phoneme_tokens(t)]
        stressed = [k for k, t in enumerate(strict) if t[:1] in _STRESS_IPA and _is_vowel(t)]
        cut = stressed[-1] if stressed else None
        out.append(None if cut is None else (tuple(phoneme_tokens(PHONEME_SEP.join(strict[:cut]))),
                                             tuple(phoneme_tokens(PHONEME_SEP.join(strict[cut:])))))
    return out


def rhymes_with(text: str, trigger: str) -> bool:
    """True when ``text`` is ``trigger`` with exactly one word replaced by a rhyme of it: the same
    last stressed vowel and everything after it, something different before it (as said in the
    phrase; the other words pronounced alike)."""
    a, b = _tails(text), _tails(trigger)
    if len(a) != len(b) or None in a:
        return False
    diff = [k for k in range(len(a)) if a[k] != b[k]]
    return len(diff) == 1 and a[diff[0]][1] == b[diff[0]][1]


def _rhymes(trig: str, lexicon: tuple[str, ...]) -> list[str]:
    names, target = trig.split(), _tails(trig)
    per_word = []
    for k in range(len(names) - 1, -1, -1):  # the last word first
        if target[k] is None:
            continue
        head, tail = target[k]
        found = sorted((phoneme_distance(_tokens(w), _tokens(names[k])), w) for w in lexicon
                       if (t := _tails(w)) and len(t) == 1 and t[0] and t[0][1] == tail and t[0][0] != head)
        phrases = (" ".join(names[:k] + [w] + names[k + 1:]) for _, w in found)
        per_word.append([p for p in phrases if rhymes_with(p, trig)])
    rounds = max((len(v) for v in per_word), default=0)
    return [v[r] for r in range(rounds) for v in per_word if r < len(v)]


def hard_negatives(trigger: str, lexicon: list[str], counts: dict[str, int],
                   avoid: list[str] | None = None) -> list[dict]:
    """Sound-alikes of ``trigger`` built from its phonemes (see the module docstring).

    Args:
        trigger: trigger word or phrase, e.g. ``"activate"`` or ``"hey jarvis"``.
        lexicon: candidate words for rhymes and the phoneme inventory (e.g. ``load_lexicon()``).
        counts: how many of each kind, keys of :data:`COUNT_KEYS` (``partials``, ``phoneme_edits``,
            ``rhymes``); a missing key or 0 disables that kind.
        avoid: texts already chosen (user negatives, lexicon sound-alikes): nothing returned has
            the same phonemes as one of them.

    Returns:
        ``[{"text", "kind"}]``: partials, then edits, then rhymes, each the closest first; texts
        are lower-case words or ``[[...]]`` espeak-ng mnemonics. Fewer than asked when the
        trigger is too short or the lexicon has too few rhymes.

    Raises:
        SeqflowError: espeak-ng's ASCII and IPA phonemes do not align (:func:`pronounce`).
    """
    trig = normalise_text(trigger)
    words, lex = pronounce(trig), tuple(sorted({normalise_text(w) for w in lexicon if normalise_text(w)}))
    picker = _Picker(trig, list(avoid or []))
    makers = {"partial": lambda: _partials(trig, words),
              "edit": lambda: _edits(words, lex, int(counts.get("phoneme_edits", 0))),
              "rhyme": lambda: [(r, None) for r in _rhymes(trig, lex)]}
    for key, kind in COUNT_KEYS.items():
        n = int(counts.get(key, 0))
        if n <= 0:
            continue
        taken = 0
        for text, want in makers[kind]():
            if taken >= n:
                break
            taken += picker.take(text, kind, want)
    return picker.out

