"""Hard negatives from the trigger's phonemes: partial phrases, one-phoneme edits, rhymes; phoneme
input rendered by espeak-ng and Piper; what festival and validate make of them."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from seqflow.data.confusables import _sub_cost, load_lexicon, phoneme_tokens, sounds_like_trigger
from seqflow.data.hard_negatives import hard_negatives, phoneme_text, pronounce
from seqflow.data.piper_tts import PiperTTS, piper_phonemes
from seqflow.data.tts import EspeakTTS, is_phoneme_text
from seqflow.data.validate import check_transcript, normalize_transcript
from seqflow.evaluate.heldout import heldout_items

TRIGGERS = ("hey jarvis", "activate")
COUNTS = {"partials": 4, "phoneme_edits": 6, "rhymes": 4}
STRESS = "ˈˌ"


@pytest.fixture(scope="module")
def lexicon() -> list[str]:
    return load_lexicon()


def tokens(text: str) -> tuple[str, ...]:
    """Phonemized back by espeak-ng (phoneme input read as written)."""
    return phoneme_tokens(EspeakTTS().phonemes(text))


def of_kind(trigger: str, lexicon: list[str], kind: str) -> list[str]:
    return [h["text"] for h in hard_negatives(trigger, lexicon, COUNTS) if h["kind"] == kind]


def contiguous_in(part: tuple[str, ...], whole: tuple[str, ...]) -> bool:
    return any(whole[i: i + len(part)] == part for i in range(len(whole) - len(part) + 1))


@pytest.mark.parametrize("trigger", TRIGGERS)
def test_partials_are_proper_parts_of_the_phrase(trigger, lexicon):
    parts = of_kind(trigger, lexicon, "partial")
    assert len(parts) == 4
    whole = tokens(trigger)
    for p in parts:
        got = tokens(p)
        assert 2 <= len(got) < len(whole) and contiguous_in(got, whole), (p, got, whole)
        assert not sounds_like_trigger(p, trigger)
    if trigger == "hey jarvis":
        assert parts[:2] == ["hey", "jarvis"]  # the words alone first
    else:
        assert all(is_phoneme_text(p) for p in parts)
        assert any(tokens(p) == whole[: len(tokens(p))] for p in parts)  # a leading part
        assert any(tokens(p) == whole[-len(tokens(p)):] for p in parts)  # and a trailing one


@pytest.mark.parametrize("trigger", TRIGGERS)
def test_edits_differ_by_exactly_one_near_phoneme(trigger, lexicon):
    edits = of_kind(trigger, lexicon, "edit")
    assert len(edits) == 6 and all(is_phoneme_text(e) for e in edits)
    whole = tokens(trigger)
    kinds = set()
    for e in edits:
        got = tokens(e)
        assert not sounds_like_trigger(e, trigger)
        if len(got) == len(whole):
            diff = [k for k in range(len(whole)) if got[k] != whole[k]]
            assert len(diff) == 1 and _sub_cost(whole[diff[0]], got[diff[0]]) <= 0.5, (e, got, whole)
            kinds.add("substitution")
        else:
            assert len(got) == len(whole) - 1
            assert any(whole[:k] + whole[k + 1:] == got for k in range(len(whole))), (e, got, whole)
            kinds.add("deletion")
    assert kinds == {"substitution", "deletion"}


def last_stressed(ipa_word: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    phones = [p for p in ipa_word.split("_") if phoneme_tokens(p)]
    k = max(i for i, p in enumerate(phones) if p[0] in STRESS)
    return phoneme_tokens("_".join(phones[:k])), phoneme_tokens("_".join(phones[k:]))


@pytest.mark.parametrize("trigger", TRIGGERS)
def test_rhymes_share_the_final_stressed_vowel_and_what_follows(trigger, lexicon):
    rhymes = of_kind(trigger, lexicon, "rhyme")
    assert len(rhymes) == 4 and not any(is_phoneme_text(r) for r in rhymes)
    target = [last_stressed(w) for w in EspeakTTS().phonemes(trigger).split()]
    for r in rhymes:
        words = [last_stressed(w) for w in EspeakTTS().phonemes(r).split()]
        assert len(words) == len(target) and not sounds_like_trigger(r, trigger)
        changed = [k for k in range(len(words)) if words[k] != target[k]]
        assert len(changed) == 1, (r, words, target)
        head, tail = words[changed[0]]
        assert tail == target[changed[0]][1] and head != target[changed[0]][0], (r, words, target)
    if trigger == "activate":
        assert "motivate" in rhymes


def test_deterministic_whatever_the_lexicon_order(lexicon):
    shuffled = list(lexicon)
    random.Random(0).shuffle(shuffled)
    for trigger in TRIGGERS:
        first = hard_negatives(trigger, lexicon, COUNTS)
        assert first == hard_negatives(trigger, shuffled, COUNTS)
        assert len({tokens(h["text"]) for h in first}) == len(first)  # no two sound the same


def test_zero_disables_and_avoid_is_respected(lexicon):
    assert hard_negatives("activate", lexicon, {"partials": 0, "phoneme_edits": 0, "rhymes": 0}) == []
    only = hard_negatives("activate", lexicon, {"rhymes": 2})
    assert [h["kind"] for h in only] == ["rhyme", "rhyme"]
    avoided = hard_negatives("activate", lexicon, {"rhymes": 2}, avoid=[only[0]["text"]])
    assert only[0]["text"] not in [h["text"] for h in avoided] and len(avoided) == 2


def test_phoneme_text_round_trips_through_espeak():
    for trigger in TRIGGERS:
        text = phoneme_text(pronounce(trigger))
        assert is_phoneme_text(text) and EspeakTTS().phonemes(text) == EspeakTTS().phonemes(trigger)
    assert EspeakTTS().phonemes("hey jarvis", ipa=False) == "h_'eI dZ_'A@_v_I_s"
    assert not is_phoneme_text("hey jarvis") and not is_phoneme_text("a [[b")


def test_phoneme_items_render_as_phonemes_with_espeak_and_piper(lexicon):
    tts = EspeakTTS()
    item = of_kind("hey jarvis", lexicon, "edit")[0]
    tts.reset(0)
    wav, sr = tts.render(item, voice="en-us+m1")
    rms = float(np.sqrt(np.mean(wav**2)))
    assert rms > 0.02 and 0.3 < len(wav) / sr < 1.5  # speech, not silence and not letters spelled out
    tts.reset(0)
    plain, _ = tts.render("activate", voice="en-us+m1")
    tts.reset(0)
    spelled, _ = tts.render(phoneme_text(pronounce("activate")), voice="en-us+m1")
    assert abs(len(spelled) - len(plain)) < 0.05 * sr  # read as phonemes: as long as the word
    assert piper_phonemes(f"say {item}") == "say [[" + tts.phonemes(item).replace("_", "") + "]]"
    wav, sr = PiperTTS("joe", seed=0).render(item)
    assert float(np.sqrt(np.mean(wav**2))) > 0.02 and 0.3 < len(wav) / sr < 1.5


def test_every_item_passes_validate_and_festival_gets_the_word_based_ones(tmp_path, lexicon):
    items = hard_negatives("hey jarvis", lexicon, COUNTS)
    for h in items:
        assert check_transcript(h["text"], "negative") is None
        assert normalize_transcript(h["text"], "negative") == (h["text"], None)
    confusables = ["davis"] + [h["text"] for h in items]
    (tmp_path / "corpus.json").write_text(json.dumps({"confusables": confusables}))
    (tmp_path / "manifest.jsonl").write_text("")
    said = [i["text"] for i in heldout_items(tmp_path, "hey jarvis", 0) if i["confusable"]]
    assert set(said) == {t for t in confusables if not is_phoneme_text(t)}
    assert {"hey", "jarvis", "davis"} <= set(said)
