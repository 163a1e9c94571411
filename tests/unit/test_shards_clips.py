"""Trigger-word clip synthesis (course method) and the corpus-backed ClipSource."""

import numpy as np
import pytest
import soundfile as sf

import seqflow.shards.clips as clips_mod
from seqflow.data.manifest import Utterance, write_manifest
from seqflow.errors import ShardError
from seqflow.shards.clips import VALID_MANIFEST_NAME, ClipSource, synthesize_clip, trim_silence

SR = 16000
VOICES = {"train": ["v1", "v2"], "val": ["v3"], "test": ["v4"]}


def _word(rng, seconds, freq, pad=0.1, sr=SR):
    t = np.arange(int(seconds * sr)) / sr
    tone = 0.5 * np.sin(2 * np.pi * freq * t) * np.hanning(len(t)) ** 0.2
    silence = np.zeros(int(pad * sr))
    return np.concatenate([silence, tone + 0.001 * rng.standard_normal(len(t)), silence]).astype(np.float32)


def make_corpus(root, bg_seconds=2.0, with_background=("train", "val", "test")):
    """Tiny real corpus: FLAC tone 'words' per voice and noise backgrounds (one at 22.05 kHz)."""
    rng = np.random.default_rng(0)
    rows = []
    for split, voices in VOICES.items():
        for v in voices:
            for kind, text, freq in (("positive", "activate", 440), ("negative", "banana", 880)):
                for j in range(2):
                    rel = f"audio/{split}/{kind}/{v}-{j}.flac"
                    (root / rel).parent.mkdir(parents=True, exist_ok=True)
                    wav = _word(rng, 0.4 + 0.1 * j, freq)
                    sf.write(root / rel, wav, SR, subtype="PCM_16")
                    rows.append(Utterance(rel, len(wav) / SR, text, v, split, kind))
        if split in with_background:
            sr = 22050 if split == "train" else SR
            rel = f"audio/{split}/background/noise.flac"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            sf.write(root / rel, 0.1 * rng.standard_normal(int(bg_seconds * sr)).astype(np.float32), sr)
            rows.append(Utterance(rel, bg_seconds, "", "white", split, "background"))
    write_manifest(root / VALID_MANIFEST_NAME, rows)
    return rows


def make_source(root, **kw):
    args = dict(root=root, sample_rate=SR, duration_s=3.0, max_positives=3, max_negatives=2,
                positive_gain_db=(-6.0, 3.0), background_gain_db=(-25.0, -8.0), label_seconds=0.4, seed=7,
                clip_counts={"train": 6, "val": 3, "test": 3})
    args.update(kw)
    return ClipSource(**args)


def _pools(rng):
    pos = [(_word(rng, 0.5, 440, pad=0), {"text": "activate", "speaker": "a"}) for _ in range(3)]
    neg = [(_word(rng, 0.7, 880, pad=0), {"text": "banana", "speaker": "b"}) for _ in range(3)]
    return pos, neg


def test_segments_inside_clip_never_overlap_and_clip_does_not_clip():
    rng0 = np.random.default_rng(1)
    pos, neg = _pools(rng0)
    bg = rng0.standard_normal(SR * 4).astype(np.float32)
    counts = {"positive": 0, "negative": 0}
    for seed in range(60):
        clip, segs = synthesize_clip(np.random.default_rng(seed), bg, pos, neg, 3.0, SR, 4, 2)
        assert clip.dtype == np.float32 and clip.shape == (3 * SR,)
        assert np.abs(clip).max() <= 1.0 and np.isfinite(clip).all()
        assert [s["start"] for s in segs] == sorted(s["start"] for s in segs)
        for a, b in zip(segs, segs[1:]):
            assert a["end"] <= b["start"]
        for s in segs:
            assert 0.0 <= s["start"] < s["end"] <= 3.0
            counts[s["kind"]] += 1
        assert sum(s["kind"] == "positive" for s in segs) <= 4
        assert sum(s["kind"] == "negative" for s in segs) <= 2
    assert counts["positive"] > 30 and counts["negative"] > 20


def test_same_seed_same_clip_other_seed_other_clip():
    pos, neg = _pools(np.random.default_rng(2))
    bg = np.random.default_rng(3).standard_normal(SR * 5).astype(np.float32)
    a = synthesize_clip(np.random.default_rng(5), bg, pos, neg, 2.0, SR, 3, 2)
    b = synthesize_clip(np.random.default_rng(5), bg, pos, neg, 2.0, SR, 3, 2)
    c = synthesize_clip(np.random.default_rng(6), bg, pos, neg, 2.0, SR, 3, 2)
    assert np.array_equal(a[0], b[0]) and a[1] == b[1]
    assert not np.array_equal(a[0], c[0])


def test_words_land_where_segments_say_and_short_background_loops():
    word = np.ones(SR // 2, dtype=np.float32) * 0.1
    bg = np.random.default_rng(0).standard_normal(SR // 3).astype(np.float32)  # shorter than the clip
    clip, segs = synthesize_clip(np.random.default_rng(0), bg, [(word, {"text": "w", "speaker": "s"})], [],
                                 3.0, SR, 1, 0, background_gain_db=(-40, -40))
    assert np.all(np.abs(clip) > 0)  # looped background fills all 3 s (no zero tail)
    for s in segs:
        inside = clip[int(s["start"] * SR) + 10:int(s["end"] * SR) - 10]
        outside = np.concatenate([clip[:int(s["start"] * SR)], clip[int(s["end"] * SR):]])
        assert np.sqrt(np.mean(inside ** 2)) > 10 * np.sqrt(np.mean(outside ** 2))


def test_words_longer_than_the_clip_are_skipped():
    long_word = (np.ones(3 * SR, dtype=np.float32) * 0.1, {"text": "x", "speaker": "s"})
    clip, segs = synthesize_clip(np.random.default_rng(0), np.zeros(0, np.float32), [long_word], [], 1.0, SR, 4, 0)
    assert segs == [] and clip.shape == (SR,) and not clip.any()


def test_trim_silence_cuts_padding():
    w = _word(np.random.default_rng(0), 0.5, 440, pad=0.3)
    t = trim_silence(w, SR)
    assert 0.5 * SR <= len(t) <= 0.55 * SR


def test_clip_source_is_deterministic_and_stores_segment_times_only(tmp_path):
    make_corpus(tmp_path)
    a = list(make_source(tmp_path).clips("train"))
    b = list(make_source(tmp_path).clips("train"))
    assert [s["__key__"] for s in a] == [f"train-{i:06d}" for i in range(6)]
    for x, y in zip(a, b):
        assert np.array_equal(x["audio"], y["audio"]) and x["json"] == y["json"]
    for s in a:
        meta = s["json"]
        assert len(s["audio"]) == 3 * SR and meta["sample_rate"] == SR and meta["duration"] == 3.0
        assert set(meta) == {"duration", "sample_rate", "speaker", "segments", "background"}  # no labels
        ends = [g["end"] for g in meta["segments"] if g["kind"] == "positive"]
        assert s["txt"] == " ".join("activate" for _ in ends)
        for g in meta["segments"]:  # label_seconds after each positive stay free of other words
            after = [h for h in meta["segments"] if g["end"] <= h["start"] < g["end"] + 0.4]
            assert g["kind"] == "negative" or not after
        assert {g["speaker"] for g in meta["segments"]} <= set(VOICES["train"])
    assert any(s["json"]["segments"] for s in a)


def test_clip_source_keeps_splits_apart_and_decodes_each_file_once(tmp_path, monkeypatch):
    rows = make_corpus(tmp_path)
    calls = []
    real = clips_mod.read_audio
    monkeypatch.setattr(clips_mod, "read_audio", lambda p, **kw: (calls.append(p), real(p, **kw))[1])
    src = make_source(tmp_path)
    for split in ("val", "test", "val"):
        for s in src.clips(split):
            assert {g["speaker"] for g in s["json"]["segments"]} <= set(VOICES[split])
    n_files = sum(r.split in ("val", "test") for r in rows)
    assert len(calls) == len(set(calls)) == n_files


def test_clip_source_errors_name_the_manifest(tmp_path):
    with pytest.raises(ShardError, match="manifest.valid.jsonl: missing"):
        list(make_source(tmp_path).clips("train"))
    make_corpus(tmp_path, with_background=("train",))
    with pytest.raises(ShardError, match="no valid background row for split 'val'"):
        list(make_source(tmp_path).clips("val"))


def test_positive_guard_keeps_label_window_free_and_hard_negatives_drawn() -> None:
    sr = 16000
    word = (np.full(int(0.3 * sr), 0.1, dtype=np.float32), {"text": "activate", "speaker": "v"})
    easy = (np.full(int(0.3 * sr), 0.1, dtype=np.float32), {"text": "table", "speaker": "v"})
    hard = (np.full(int(0.3 * sr), 0.1, dtype=np.float32), {"text": "activist", "speaker": "v"})
    bg = np.zeros(sr, dtype=np.float32)
    texts = []
    for seed in range(40):
        _, segs = synthesize_clip(np.random.default_rng(seed), bg, [word], [easy], 10.0, sr, 4, 2,
                                  positive_guard_s=2.0, hard_negatives=[hard], hard_negative_fraction=1.0)
        for a in segs:
            if a["kind"] == "positive":
                assert not [b for b in segs if b is not a and a["end"] <= b["start"] < a["end"] + 2.0]
        texts += [s["text"] for s in segs if s["kind"] == "negative"]
    assert texts and set(texts) == {"activist"}


def test_clip_source_from_config_ignores_the_network(tmp_path):
    from seqflow.config import load_config

    make_corpus(tmp_path)
    base = ["model=trigger_word", "clips.duration=3.0", "clips.train_clips=3", f"augment.cache_dir={tmp_path}/cache", "augment.rir_bank_size=4"]
    a = ClipSource.from_config(load_config(base), tmp_path)
    b = ClipSource.from_config(load_config(base + ["model.net.conv_stride=2", "model.features.hop_length=320"]),
                               tmp_path)
    assert a.label_seconds == 2.0
    for x, y in zip(a.clips("train"), b.clips("train")):
        assert np.array_equal(x["audio"], y["audio"]) and x["json"] == y["json"]


def test_words_trimmed_at_render_are_not_trimmed_again(tmp_path):
    """One owner per transform: rows marked ``trimmed`` (synthetic renders) keep their audio as
    rendered; user audio (no mark) is trimmed at shard time."""
    from seqflow.data.manifest import read_manifest

    make_corpus(tmp_path)
    rows = read_manifest(tmp_path / VALID_MANIFEST_NAME)
    pad = np.zeros(int(0.3 * SR), np.float32)
    for u in rows:
        if u.kind == "positive" and u.split == "train":
            wav, _ = sf.read(tmp_path / u.audio_filepath, dtype="float32")
            sf.write(tmp_path / u.audio_filepath, np.concatenate([pad, wav, pad]), SR, subtype="PCM_16")
            u.extra = {"trimmed": True} if u.audio_filepath.endswith("-0.flac") else {}
    write_manifest(tmp_path / VALID_MANIFEST_NAME, rows)
    pool = {w[1]["path"]: len(w[0]) for w in make_source(tmp_path)._pool("train", "positive")}
    marked = [n for p, n in pool.items() if p.endswith("-0.flac")]
    unmarked = [n for p, n in pool.items() if p.endswith("-1.flac")]
    assert all(n >= int(0.6 * SR) for n in marked)          # silence kept: not trimmed twice
    assert all(n < int(0.6 * SR) for n in unmarked)         # user audio trimmed here
