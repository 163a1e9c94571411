"""Can the configured voices speak the trigger word? espeak-ng reads letters of a script its
voice's language does not use as letter names ("привет" with an English voice becomes
"pe er i ve ye te"), so such a corpus would teach the model a spelled-out word.

A word in Latin script is taken as speakable by every voice (English voices read any Latin
word, accents included). For other scripts each voice is probed with espeak-ng itself
(:meth:`seqflow.data.tts.EspeakTTS.phonemes`): a voice spells the word out when its phonemes
carry a primary stress per letter, or switch language (``(ru)`` markers).
"""

from __future__ import annotations

import os
import unicodedata

from omegaconf import DictConfig

from seqflow.errors import ConfigError


def scripts(text: str) -> set[str]:
    """Unicode scripts of the letters of ``text`` (first word of each letter's Unicode name:
    ``LATIN``, ``CYRILLIC``, ``GREEK``, ``CJK``, ...)."""
    return {unicodedata.name(c, "UNKNOWN").split()[0] for c in text if c.isalpha()}


def spells_out(tts, word: str, voice: str) -> bool:
    """True when espeak-ng ``voice`` cannot read ``word`` as a word: it spells its letters (one
    primary stress per letter) or switches to another language; an empty result counts too."""
    letters = [c for c in word if c.isalpha()]
    raw = tts.phonemes(word, voice=voice)
    if not raw.strip() or ("(" in raw and ")" in raw):
        return True
    return len(letters) >= 2 and raw.count("ˈ") >= len(letters)


def _has_dictionary(accent: str) -> bool:
    import espeakng_loader

    return os.path.exists(os.path.join(espeakng_loader.get_data_path(), f"{accent.split('-')[0]}_dict"))


def voices_that_speak(tts, word: str) -> list[str]:
    """Every espeak-ng base voice (accent) that reads ``word`` without spelling it out."""
    return [v for v in tts.voices() if _has_dictionary(v) and not spells_out(tts, word, v)]


def configured_voices(cfg_data: DictConfig) -> list[tuple[str, str]]:
    """``(name shown, espeak voice)`` of every configured voice: ``data.accents`` for espeak, and
    each Piper voice's phonemizer voice (from its ``.onnx.json``)."""
    import json

    out = [(f"espeak {a}", str(a)) for a in (cfg_data.get("accents") or [])]
    if "piper" in list(cfg_data.get("tts_engines") or []):
        from seqflow.data.piper_tts import voice_files

        for v in (cfg_data.get("piper") or {}).get("voices") or []:
            conf = json.loads(voice_files(str(v))[1].read_text())
            out.append((f"piper {v}", str(conf.get("espeak", {}).get("voice", "en-us"))))
    return out


# the usual espeak-ng voice of a script, suggested first when it can speak the word
USUAL_VOICE = {"CYRILLIC": "ru", "GREEK": "el", "ARABIC": "ar", "HEBREW": "he", "CJK": "cmn", "HIRAGANA": "ja",
               "KATAKANA": "ja", "HANGUL": "ko", "DEVANAGARI": "hi", "THAI": "th", "GEORGIAN": "ka", "ARMENIAN": "hy"}


def _example(can: list[str], word: str, cfg_data: DictConfig, bad: list[str]) -> str:
    usual = [USUAL_VOICE[s] for s in sorted(scripts(word)) if USUAL_VOICE.get(s) in can]
    voice = usual[0] if usual else can[0]
    variants = len(cfg_data.get("variants") or []) or 1
    out = f"data.accents=[{voice}]"
    if int(cfg_data.get("num_voices") or 0) > variants:
        out += f" data.num_voices={variants}"
    if any(b.startswith("piper") for b in bad):
        out += " data.tts_engines=[espeak]"
    return out


def check_trigger_word_speakable(cfg: DictConfig) -> None:
    """For ``data=synthetic``: every configured voice must read ``data.trigger_word`` as a word.

    Raises:
        ConfigError: naming the trigger word, the voices that would spell it out and the espeak-ng
            voices that can speak it (to put in ``data.accents``).
    """
    d = cfg.data
    if str(d.get("source")) != "synthetic" or not d.get("trigger_word"):
        return
    word = " ".join(str(d.trigger_word).lower().split())
    if scripts(word) <= {"LATIN"}:
        return
    from seqflow.data.tts import EspeakTTS

    tts = EspeakTTS()
    bad = [name for name, voice in configured_voices(d) if spells_out(tts, word, voice)]
    if not bad:
        return
    can = voices_that_speak(tts, word)
    hint = (f"espeak-ng voices that can: {', '.join(can)} (e.g. {_example(can, word, d, bad)})" if can
            else "no espeak-ng voice can; use recordings (data=speech_commands with data.trigger_word)")
    raise ConfigError(f"data.trigger_word={word!r}: the configured voices {', '.join(bad)} cannot speak it "
                      f"(they would spell out its {'/'.join(sorted(scripts(word)))} letters); {hint}")
