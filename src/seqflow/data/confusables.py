"""Confusable negatives: words and word pairs that sound like the trigger word.

A trigger-word model learns most from negatives that nearly match the trigger ("activity",
"captivate", "active eight" for "activate"). They are found automatically: every word of a
lexicon is turned into IPA phonemes by espeak-ng, and ranked by a weighted phoneme edit
distance to the trigger (vowel↔vowel and voiced↔voiceless pairs are cheap substitutions).
Two-word candidates come from splitting the trigger's phonemes in two and pairing the word
closest to the first part with the word closest to the rest.

Texts that are the trigger, sound exactly like it (same phonemes and stress), or contain its
whole pronunciation ("deactivate", "activated") are never returned: they would be positives.
A word of a multi-word trigger alone ("hey", "jarvis" for "hey jarvis") is a negative: the
detector must fire on the whole phrase only. More sound-alikes made from the trigger's own
phonemes (partial phrases, one-phoneme edits, rhymes) are in :mod:`seqflow.data.hard_negatives`.

>>> confusable_words("activate", load_lexicon(), EspeakTTS(), 6)   # doctest: +SKIP
['activity', 'captivate', ...]
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

from seqflow.data.tts import PHONEME_SEP, EspeakTTS, is_phoneme_text

_VOWEL_CHARS = set("aeiouyæɑɒɔəɛɜɪʊʌɚɐᵻɘɵøœɶɨʉɯɤ")
_GROUPS = [  # consonants that are easy to mishear for one another
    {"p", "b"}, {"t", "d", "ɾ", "ʔ"}, {"k", "ɡ", "g"}, {"f", "v"}, {"θ", "ð"}, {"s", "z"},
    {"ʃ", "ʒ"}, {"tʃ", "dʒ"}, {"m", "n", "ŋ"}, {"l", "ɹ", "ɫ"}, {"w", "ʍ"},
]
_NORMALISE = {"ᵻ": "ɪ", "ɐ": "ə", "ɾ": "t", "ɚ": "əɹ", "ɝ": "ɜɹ", "ɫ": "l", "g": "ɡ"}
_PAIR_PENALTY = 0.05  # prefer a single word over a pair of equal distance


def load_lexicon() -> list[str]:
    """The bundled list of common English words (``seqflow/resources/words.txt``), in file order."""
    text = resources.files("seqflow").joinpath("resources/words.txt").read_text(encoding="utf-8")
    return [w.strip().lower() for w in text.splitlines() if w.strip()]


def normalise_text(text: str) -> str:
    """Lower-case, trim and collapse whitespace: ``"  Hey  Jarvis "`` → ``"hey jarvis"``."""
    return " ".join(str(text).lower().split())


def phoneme_tokens(ipa: str) -> tuple[str, ...]:
    """Split :meth:`EspeakTTS.phonemes` output into comparable phoneme tokens (word breaks and
    stress/length marks dropped, reduced vowels and flaps mapped to their full forms)."""
    out = []
    for tok in ipa.replace(" ", PHONEME_SEP).split(PHONEME_SEP):
        tok = tok.replace("ˈ", "").replace("ˌ", "").replace("ː", "").replace("ˑ", "")
        for a, b in _NORMALISE.items():
            tok = tok.replace(a, b)
        if tok:
            out.append(tok)
    return tuple(out)


@lru_cache(maxsize=65536)
def _ipa(text: str) -> str:
    return EspeakTTS().phonemes(text)


@lru_cache(maxsize=65536)
def _tokens(text: str) -> tuple[str, ...]:
    return phoneme_tokens(_ipa(text))


@lru_cache(maxsize=65536)
def _strict(text: str) -> tuple[str, ...]:
    return tuple(_ipa(text).replace(" ", PHONEME_SEP).split(PHONEME_SEP))


def _is_vowel(tok: str) -> bool:
    return any(c in _VOWEL_CHARS for c in tok)


@lru_cache(maxsize=None)
def _sub_cost(a: str, b: str) -> float:
    if a == b:
        return 0.0
    va, vb = _is_vowel(a), _is_vowel(b)
    if va and vb:
        return 0.3 if a[0] == b[0] or a[-1] == b[-1] else 0.5
    if va != vb:
        return 1.0
    return 0.4 if any(a in g and b in g for g in _GROUPS) else 1.0


def phoneme_distance(a: tuple[str, ...], b: tuple[str, ...]) -> float:
    """Weighted Levenshtein distance between phoneme token sequences (insert/delete cost 1)."""
    prev = [float(j) for j in range(len(b) + 1)]
    for i, ta in enumerate(a, 1):
        cur = [float(i)] + [0.0] * len(b)
        for j, tb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1.0, cur[j - 1] + 1.0, prev[j - 1] + _sub_cost(ta, tb))
        prev = cur
    return prev[-1]


def _contains(hay: tuple[str, ...], needle: tuple[str, ...]) -> bool:
    n = len(needle)
    return any(hay[i: i + n] == needle for i in range(len(hay) - n + 1))


def excluded_words(trigger: str) -> set[str]:
    """The trigger phrase (normalised): never usable as a negative. Its words alone are usable."""
    return {normalise_text(trigger)}


def sounds_like_trigger(text: str, trigger: str) -> bool:
    """True when ``text`` cannot be a negative for ``trigger``: it is the trigger, is pronounced
    exactly like it (same phonemes and stress, e.g. "hay jarvis" for "hey jarvis"), or is longer
    and contains the trigger's whole pronunciation ("activated").

    ``text`` may be espeak-ng phoneme mnemonics in ``[[...]]`` (case kept: ``I`` and ``i`` differ).
    Near-homophones that differ in stress or vowel reduction ("active eight") and a word of a
    multi-word trigger alone ("hey") are allowed.
    """
    t = normalise_text(trigger)
    x = " ".join(str(text).split()) if is_phoneme_text(text) else normalise_text(text)
    if x in excluded_words(t) or _strict(x) == _strict(t):
        return True
    tt, xt = _tokens(t), _tokens(x)
    return len(xt) > len(tt) and _contains(xt, tt)


def _ranked(target: tuple[str, ...], lexicon: list[str], slack: int) -> list[tuple[float, str]]:
    out = []
    for w in lexicon:
        wt = _tokens(w)
        if abs(len(wt) - len(target)) <= slack:
            out.append((phoneme_distance(wt, target), w))
    out.sort()
    return out


def confusable_words(trigger: str, lexicon: list[str], tts: EspeakTTS, n: int) -> list[str]:
    """Pick ``n`` negatives that sound like ``trigger``: single words and two-word splits.

    Args:
        trigger: trigger word or phrase, e.g. ``"activate"`` or ``"hey jarvis"``.
        lexicon: candidate words (e.g. :func:`load_lexicon`).
        tts: the (process-wide) synthesizer used for phonemes (en-us pronunciations).
        n: how many to return (about half single words, half pairs).

    Returns:
        Up to ``n`` distinct lower-case words/phrases, closest first; deterministic for equal
        inputs. Never the trigger, a homophone of it, or a word containing it (see
        :func:`sounds_like_trigger`).
    """
    if n <= 0:
        return []
    trig = normalise_text(trigger)
    target = phoneme_tokens(tts.phonemes(trig))
    words = sorted({normalise_text(w) for w in lexicon if normalise_text(w)} - excluded_words(trig))
    words = [w for w in words if not sounds_like_trigger(w, trig)]
    size = max(len(target), 1)

    singles = sorted((d / max(size, len(_tokens(w))), w) for d, w in _ranked(target, words, slack=3))

    pairs: list[tuple[float, str]] = []
    for cut in range(2, len(target) - 1):
        head, tail = target[:cut], target[cut:]
        best_head = _ranked(head, words, slack=1)[:6]
        best_tail = _ranked(tail, words, slack=1)[:6]
        for dh, w1 in best_head:
            for dt, w2 in best_tail:
                text = f"{w1} {w2}"
                if w1 == w2 or sounds_like_trigger(text, trig):
                    continue
                pairs.append(((dh + dt) / size + _PAIR_PENALTY, text))
    pairs.sort()

    chosen: list[str] = []
    used: set[str] = set()
    n_single = (n + 1) // 2
    for _, w in singles:
        if len(chosen) >= n_single:
            break
        chosen.append(w)
    for _, text in pairs:
        if len(chosen) >= n:
            break
        parts = text.split()
        if text not in chosen and not used.intersection(parts):
            chosen.append(text)
            used.update(parts)
    for _, w in singles:  # too few distinct pairs: top up with more single words
        if len(chosen) >= n:
            break
        if w not in chosen:
            chosen.append(w)
    return chosen
