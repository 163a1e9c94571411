"""The synthetic source's configuration, checked before anything is rendered (``conf/data/synthetic.yaml``)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from seqflow.data.background import BACKGROUND_KINDS
from seqflow.data.confusables import normalise_text, sounds_like_trigger
from seqflow.data.hard_negatives import COUNT_KEYS
from seqflow.data.piper_tts import check_piper_config
from seqflow.data.synthetic_sentences import MAX_SENTENCES, SENTENCE_KEYS, check_sentence_config
from seqflow.data.tts import EspeakTTS
from seqflow.errors import ConfigError

SPLITS = ("train", "val", "test")
BUILD_KEYS = ("trigger_word", "negatives", "num_negatives", "num_confusables", "hard_negatives", "accents",
              "variants", "num_voices", "voice_split", "rates_wpm", "pitches", "renders_per_voice",
              "negatives_per_voice", "background_kinds", "background_seconds", "backgrounds_per_kind",
              "background_dirs", "tts_engines", "piper") + SENTENCE_KEYS



def _range(spec: dict, key: str, lo: int, hi: int) -> list[int]:
    val = spec[key]
    if not (isinstance(val, list) and len(val) == 2 and all(isinstance(v, (int, float)) for v in val)
            and lo <= val[0] <= val[1] <= hi):
        raise ConfigError(f"data.{key} must be [low, high] with {lo} <= low <= high <= {hi}, got {val}")
    return [int(val[0]), int(val[1])]


def _int(spec: dict, key: str, minimum: int) -> int:
    val = spec[key]
    if isinstance(val, bool) or not isinstance(val, int) or val < minimum:
        raise ConfigError(f"data.{key} must be an integer >= {minimum}, got {val!r}")
    return val


def validate_config(cfg_data: DictConfig, sample_rate: int, tts: EspeakTTS) -> dict:
    """Check every ``data.*`` key the synthetic source uses; return them as plain values.

    Raises:
        ConfigError: empty trigger word, no negatives, bad ``hard_negatives`` counts, unknown
            accent/variant/background kind, bad ranges or split fractions, missing background
            folder, unknown TTS engine or a Piper engine/voice that is not installed (naming the
            ``pip install``).
    """
    raw = OmegaConf.to_container(cfg_data, resolve=True) if isinstance(cfg_data, DictConfig) else dict(cfg_data)
    missing = [k for k in BUILD_KEYS if k not in raw]
    if missing:
        raise ConfigError(f"data config lacks key(s) {', '.join(missing)} (see conf/data/synthetic.yaml)")
    spec = {k: raw[k] for k in BUILD_KEYS}
    trig = normalise_text(spec["trigger_word"] or "")
    if not any(c.isalnum() for c in trig):
        raise ConfigError(f"data.trigger_word is empty ({spec['trigger_word']!r}): set e.g. data.trigger_word=activate")
    spec["trigger_word"] = trig
    user = [normalise_text(w or "") for w in (spec["negatives"] or [])]
    for w in user:
        if not any(c.isalnum() for c in w):
            raise ConfigError(f"data.negatives holds an empty word: {spec['negatives']}")
        if sounds_like_trigger(w, trig):
            raise ConfigError(f"data.negatives holds {w!r}, which is (or sounds exactly like, or contains) "
                              f"the trigger word {trig!r}: remove it")
    spec["negatives"] = list(dict.fromkeys(user))
    spec["num_negatives"] = max(0, int(spec["num_negatives"] or 0))
    spec["num_confusables"] = max(0, int(spec["num_confusables"] or 0))
    hard = spec["hard_negatives"] if isinstance(spec["hard_negatives"], dict) else None
    if hard is None or set(hard) != set(COUNT_KEYS) or any(isinstance(v, bool) or not isinstance(v, int) or v < 0
                                                          for v in hard.values()):
        raise ConfigError(f"data.hard_negatives must give a count >= 0 for each of {', '.join(COUNT_KEYS)} "
                          f"(0 disables that kind), got {spec['hard_negatives']!r}")
    spec["hard_negatives"] = {k: int(hard[k]) for k in COUNT_KEYS}
    if spec["num_negatives"] == 0 and not spec["negatives"]:
        raise ConfigError("no negative words: data.num_negatives <= 0 and data.negatives is empty; "
                          "a trigger-word corpus needs negatives (e.g. data.num_negatives=60)")
    accents = [str(a).strip().lower() for a in (spec["accents"] or [])]
    variants = [str(v).strip() for v in (spec["variants"] or [])]
    if not accents:
        raise ConfigError(f"data.accents is empty; valid English accents: {', '.join(tts.accents('en'))}")
    for a in accents:
        if "+" in a:
            raise ConfigError(f"data.accents entry {a!r} holds a variant; put variants in data.variants")
        tts.check_voice(a)
    for v in variants:
        tts.check_voice(f"{accents[0]}+{v}")
    spec["accents"], spec["variants"] = list(dict.fromkeys(accents)), list(dict.fromkeys(variants))
    combos = len(spec["accents"]) * max(1, len(spec["variants"]))
    n = _int(spec, "num_voices", len(SPLITS))
    if n > combos:
        raise ConfigError(f"data.num_voices={n} but only {combos} accent+variant combinations are configured")
    split = spec["voice_split"] or {}
    if set(split) != set(SPLITS) or any(not isinstance(split[s], (int, float)) or split[s] <= 0 for s in SPLITS):
        raise ConfigError(f"data.voice_split must give a positive fraction for each of {SPLITS}, got {split}")
    spec["voice_split"] = {s: float(split[s]) for s in SPLITS}
    spec["rates_wpm"] = _range(spec, "rates_wpm", 80, 450)
    spec["pitches"] = _range(spec, "pitches", 0, 100)
    _int(spec, "renders_per_voice", 1)
    _int(spec, "negatives_per_voice", 0)
    kinds = list(spec["background_kinds"] or [])
    bad = [k for k in kinds if k not in BACKGROUND_KINDS]
    if bad:
        raise ConfigError(f"unknown data.background_kinds {bad}; valid kinds: {', '.join(BACKGROUND_KINDS)}")
    spec["background_kinds"] = list(dict.fromkeys(kinds))
    if not isinstance(spec["background_seconds"], (int, float)) or spec["background_seconds"] <= 0:
        raise ConfigError(f"data.background_seconds must be > 0, got {spec['background_seconds']!r}")
    spec["background_seconds"] = float(spec["background_seconds"])
    per = spec["backgrounds_per_kind"] or {}
    if set(per) - set(SPLITS) or any(not isinstance(v, int) or v < 0 for v in per.values()):
        raise ConfigError(f"data.backgrounds_per_kind must map {SPLITS} to counts >= 0, got {per}")
    spec["backgrounds_per_kind"] = {s: int(per.get(s, 0)) for s in SPLITS}
    dirs = [str(Path(d).expanduser().resolve()) for d in (spec["background_dirs"] or [])]
    for d in dirs:
        if not Path(d).is_dir():
            raise ConfigError(f"data.background_dirs entry {d} is not a folder")
    spec["background_dirs"] = dirs
    check_sentence_config(spec)
    check_piper_config(spec, MAX_SENTENCES)
    if not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ConfigError(f"audio.sample_rate must be a positive integer, got {sample_rate!r}")
    return spec
