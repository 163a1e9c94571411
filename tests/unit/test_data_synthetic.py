"""The synthetic corpus: determinism, voice split, negatives, backgrounds, user files, sentences."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from seqflow.audio.io import read_audio
from seqflow.config import load_config
from seqflow.data.background import BACKGROUND_KINDS, generate_background
from seqflow.data.confusables import confusable_words, load_lexicon, sounds_like_trigger
from seqflow.data.manifest import read_manifest
from seqflow.data.synthetic import CORPUS_NAME, build_synthetic_corpus
from seqflow.data.tts import EspeakTTS
from seqflow.errors import ConfigError
from seqflow.text.normalize import normalize_text

SR = 16000
TINY = [
    "data.tts_engines=[espeak]",  # these tests count espeak voices and files; Piper: test_data_piper.py
    "data.num_voices=3", "data.accents=[en-us,en-gb]", "data.variants=[m1,f2]",
    "data.renders_per_voice=2", "data.negatives_per_voice=3", "data.num_negatives=6",
    "data.num_confusables=2", "data.hard_negatives={partials:1,phoneme_edits:1,rhymes:1}",
    "data.background_kinds=[white,babble]", "data.background_seconds=1.0",
    "data.backgrounds_per_kind={train:1,val:1,test:1}", "data.num_sentences=12",
]
KIND_ORDER = ("positive", "negative", "background", "utterance")


def tiny_cfg(root: Path, *extra: str):
    return load_config(TINY + [f"data.root={root}", *extra])


def build(root: Path, *extra: str) -> Path:
    cfg = tiny_cfg(root, *extra)
    return build_synthetic_corpus(cfg.data, cfg.audio.sample_rate, cfg.seed, progress=False)


def all_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("a") / "data"
    build(root)
    return root


def test_build_is_byte_identical(corpus, tmp_path):
    other = tmp_path / "data"
    build(other)
    a, b = all_files(corpus), all_files(other)
    assert list(a) == list(b)
    assert len([k for k in a if k.endswith(".flac")]) == 3 * (2 + 3) + 3 * 2 + 12
    assert [k for k in a if a[k] != b[k]] == []


def test_manifest_rows_match_audio(corpus):
    rows = read_manifest(corpus / "manifest.jsonl")
    keys = [(r.split, r.kind, r.audio_filepath) for r in rows]
    assert keys == sorted(keys, key=lambda k: (("train", "val", "test").index(k[0]), KIND_ORDER.index(k[1]), k[2]))
    for r in rows:
        wav, sr = read_audio(r.resolve(corpus))
        assert sr == SR and abs(len(wav) / sr - r.duration) < 1e-3
        assert np.abs(wav).max() < 1.0
        if r.kind == "positive":
            assert r.text == "activate" and 0.2 < r.duration < 2.0
        if r.kind == "background":
            assert r.text == "" and r.duration == pytest.approx(1.0) and r.speaker in ("white", "babble")
        if r.kind == "utterance":  # raw sentence in text, the spoken (normalised) form in extra
            assert r.extra["normalized"] == normalize_text(r.text)
            assert r.audio_filepath == f"audio/{r.split}/utterance/{Path(r.audio_filepath).stem}.flac"
            assert 0.1 * len(r.extra["normalized"].split()) < r.duration < 1.0 * len(r.extra["normalized"].split()) + 1


def test_voice_splits_are_disjoint(corpus):
    summary = json.loads((corpus / CORPUS_NAME).read_text())
    voices = {s: set(v) for s, v in summary["voices"].items()}
    assert all(len(v) == 1 for v in voices.values())
    assert not (voices["train"] & voices["val"] or voices["train"] & voices["test"] or voices["val"] & voices["test"])
    for r in read_manifest(corpus / "manifest.jsonl"):
        if r.kind in ("positive", "negative", "utterance"):
            assert r.speaker in voices[r.split]


def test_sentence_corpus_is_split_by_sentence_and_voice(corpus):
    rows = [r for r in read_manifest(corpus / "manifest.jsonl") if r.kind == "utterance"]
    assert len(rows) == 12 and len({r.extra["normalized"] for r in rows}) == 12  # each sentence spoken once
    by_split = {s: {r.extra["normalized"] for r in rows if r.split == s} for s in ("train", "val", "test")}
    assert [len(by_split[s]) for s in ("train", "val", "test")] == [10, 1, 1]  # 0.8/0.1/0.1 of 12
    assert not by_split["test"] & by_split["train"] and not by_split["val"] & by_split["train"]
    assert [r.audio_filepath for r in rows if r.split == "test"] == ["audio/test/utterance/test-utterance-000000.flac"]
    assert len({(r.extra["rate_wpm"], r.extra["pitch"]) for r in rows}) > 1  # varied rate and pitch
    summary = json.loads((corpus / CORPUS_NAME).read_text())
    assert summary["counts"]["train"]["utterance"] == 10
    assert summary["config"]["num_sentences"] == 12
    sentences = summary["sentences"]
    assert {s: v["count"] for s, v in sentences.items()} == {"train": 10, "val": 1, "test": 1}
    hours = sum(r.duration for r in rows if r.split == "train") / 3600
    assert sentences["train"]["hours"] == pytest.approx(hours, abs=1e-4) and hours > 0


def test_sentences_can_be_disabled_and_change_the_fingerprint(tmp_path):
    root = tmp_path / "data"
    build(root, "data.num_sentences=0")
    summary = json.loads((root / CORPUS_NAME).read_text())
    assert not (root / "audio/train/utterance").exists()
    assert all(v["count"] == 0 for v in summary["sentences"].values())
    assert not any(r.kind == "utterance" for r in read_manifest(root / "manifest.jsonl"))
    build(root, "data.num_sentences=3")
    assert json.loads((root / CORPUS_NAME).read_text())["fingerprint"] != summary["fingerprint"]
    assert len(list(root.glob("audio/*/utterance/*.flac"))) == 3


def test_negatives_exclude_the_trigger(corpus):
    summary = json.loads((corpus / CORPUS_NAME).read_text())
    texts = [n["text"] for n in summary["negatives"]]
    assert len(texts) == 6 + 3 and "activate" not in texts  # num_negatives + hard negatives
    assert [n["text"] for n in summary["negatives"] if n["source"] == "confusable"] == summary["confusables"]
    assert len(summary["confusables"]) == 2 + 3
    hard = summary["hard_negatives"]
    assert [h["text"] for h in hard] == summary["confusables"]
    assert [h["kind"] for h in hard] == ["lexicon", "lexicon", "partial", "edit", "rhyme"]
    assert all(h["phonemes"] for h in hard) and hard[2]["text"].startswith("[[")
    rows = read_manifest(corpus / "manifest.jsonl")
    assert {r.text for r in rows if r.kind == "negative"} <= set(texts)
    assert all(r.extra["confusable"] == (r.text in summary["confusables"]) for r in rows if r.kind == "negative")


def test_confusables_sound_like_activate():
    words = confusable_words("activate", load_lexicon() + ["activate", "activated"], EspeakTTS(), 12)
    assert len(words) == 12 and len(set(words)) == 12
    assert "activate" not in words and "activated" not in words
    assert {"activity", "captivate", "activist"} <= set(words)
    assert any(" " in w for w in words)  # two-word splits too
    assert words == confusable_words("activate", load_lexicon(), EspeakTTS(), 12)


def test_confusables_for_a_phrase_exclude_the_phrase_not_its_words():
    words = confusable_words("hey jarvis", load_lexicon() + ["hey", "jarvis", "hay", "hay jarvis"], EspeakTTS(), 10)
    assert len(words) == 10
    assert not {"hey jarvis", "hay jarvis"} & set(words)  # the phrase and its homophones
    assert not sounds_like_trigger("hey", "hey jarvis") and not sounds_like_trigger("jarvis", "hey jarvis")
    assert sounds_like_trigger("hay jarvis", "hey jarvis") and sounds_like_trigger("hey jarvis please", "hey jarvis")


def test_rebuild_is_skipped_when_up_to_date(corpus, caplog):
    before = {p: p.stat().st_mtime_ns for p in corpus.rglob("*.flac")}
    with caplog.at_level(logging.INFO, logger="seqflow.data.synthetic"):
        build(corpus)
    assert "corpus up to date" in caplog.text
    assert before == {p: p.stat().st_mtime_ns for p in corpus.rglob("*.flac")}


def test_changed_config_rebuilds_and_removes_stale_files(tmp_path):
    root = tmp_path / "data"
    build(root)
    build(root, "data.background_kinds=[pink]")
    files = [p.name for p in root.rglob("*.flac") if "background" in p.name]
    assert files and all("-pink-" in f for f in files)


@pytest.mark.parametrize("override, needle", [
    ("data.accents=[en-us,en-xx]", "en-xx"),
    ("data.variants=[m1,zz9]", "zz9"),
    ("data.trigger_word=''", "trigger_word"),
    ("data.num_negatives=0", "negative"),
    ("data.hard_negatives.rhymes=-1", "hard_negatives"),
    ("~data.hard_negatives.partials", "hard_negatives"),
    ("data.negatives=[activate]", "activate"),
    ("data.background_kinds=[white,rain]", "rain"),
    ("data.num_voices=99", "num_voices"),
    ("data.background_dirs=[/nonexistent/folder]", "/nonexistent/folder"),
    ("data.num_sentences=-1", "num_sentences"),
    ("data.sentence_split.test=0", "sentence_split"),
])
def test_bad_config_fails_before_any_work(tmp_path, override, needle):
    root = tmp_path / "data"
    with pytest.raises(ConfigError) as exc:
        build(root, override)
    assert needle in str(exc.value)
    assert not root.exists()


@pytest.mark.parametrize("kind", BACKGROUND_KINDS)
def test_background_kinds_length_and_level(kind):
    kw = dict(tts=EspeakTTS(), words=["table", "window", "garden"], voices=["en-us+m1", "en-gb+f2"])
    wav = generate_background(kind, 2.5, SR, np.random.default_rng(3), **kw)
    assert wav.dtype == np.float32 and wav.shape == (int(2.5 * SR),)
    rms = float(np.sqrt((wav.astype(np.float64) ** 2).mean()))
    assert 0.04 <= rms <= 0.1 + 1e-6 and np.abs(wav).max() <= 0.98 + 1e-6
    if kind != "babble":  # babble depends on the TTS state too; the corpus builder resets it
        assert np.array_equal(wav, generate_background(kind, 2.5, SR, np.random.default_rng(3), **kw))


def test_background_spectra_differ():
    rng = lambda: np.random.default_rng(0)  # noqa: E731
    low = {}
    for kind in ("white", "pink", "brown"):
        spec = np.abs(np.fft.rfft(generate_background(kind, 2.0, SR, rng()))) ** 2
        freqs = np.fft.rfftfreq(2 * SR, 1 / SR)
        low[kind] = spec[freqs < 500].sum() / spec.sum()
    assert low["white"] < low["pink"] < low["brown"]
    hum = generate_background("hum", 2.0, SR, rng())
    power = np.abs(np.fft.rfft(hum)) ** 2
    freqs = np.fft.rfftfreq(len(hum), 1 / SR)
    near = [np.abs((freqs[:, None] / base) - np.arange(1, 9)[None, :]).min(axis=1) * base < 2 for base in (50, 60)]
    assert max(power[m].sum() for m in near) > 0.8 * power.sum()  # mains harmonics dominate


def test_unknown_background_kind():
    with pytest.raises(ConfigError, match="rain"):
        generate_background("rain", 1.0, SR, np.random.default_rng(0))


def test_user_background_files_are_copied_verbatim(tmp_path):
    src = tmp_path / "recordings"
    (src / "sub").mkdir(parents=True)
    sf.write(src / "kitchen.wav", 0.1 * np.random.default_rng(0).standard_normal(SR), SR, subtype="PCM_16")
    sf.write(src / "sub" / "street.flac", np.zeros(SR // 2), SR, subtype="PCM_16")
    (src / "broken.wav").write_bytes(b"RIFF\x00\x00garbage that is not audio")
    (src / "notes.txt").write_text("not audio")
    root = tmp_path / "data"
    build(root, f"data.background_dirs=[{src}]")
    user = [r for r in read_manifest(root / "manifest.jsonl") if r.speaker == "user"]
    assert len(user) == 3
    by_name = {Path(r.extra["source"]).name: r for r in user}
    assert set(by_name) == {"kitchen.wav", "street.flac", "broken.wav"}
    for name, r in by_name.items():
        assert r.kind == "background" and r.split in ("train", "val", "test")
        assert r.audio_filepath.startswith("background/user/") and r.audio_filepath.endswith(name)
        assert r.resolve(root).read_bytes() == Path(r.extra["source"]).read_bytes()
    assert by_name["broken.wav"].duration == 0.0
    assert by_name["kitchen.wav"].duration == pytest.approx(1.0)
    assert by_name["street.flac"].duration == pytest.approx(0.5)
    assert os.path.getsize(by_name["broken.wav"].resolve(root)) == len(b"RIFF\x00\x00garbage that is not audio")
