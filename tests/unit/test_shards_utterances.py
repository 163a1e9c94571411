"""ASR shards: utterances from the validated corpus, tokenizer, shard-stage quarantine, reuse."""

import json
import logging

import numpy as np
import pytest
import soundfile as sf

from seqflow.config import load_config
from seqflow.data.manifest import Utterance, read_jsonl, write_manifest
from seqflow.errors import ConfigError, ShardError
from seqflow.shards.clips import VALID_MANIFEST_NAME
from seqflow.shards.reader import iter_samples, make_dataloader
from seqflow.shards.writer import shard_config_hash, shard_dataset, verify_index
from seqflow.text.tokenizers import load_tokenizer

SR = 16000
# (split, speaker, raw text, seconds); train never uses the letters q, x, z
GOOD = [
    ("train", "v1", "Turn on the lights.", 2.0),
    ("train", "v1", "Set a timer for 10 minutes", 3.0),
    ("train", "v2", "hello world", 1.5),
    ("train", "v2", "good morning", 1.8),
    ("train", "v1", "it's a kind voice", 2.2),
    ("train", "v2", "play some music", 2.4),
    ("val", "v3", "turn off the kitchen lights", 2.6),
    ("val", "v3", "what time is it", 1.7),
    ("val", "v3", "good night", 1.2),
    ("test", "v4", "open the door", 1.6),
    ("test", "v4", "it's 7:30 am", 2.4),
    ("test", "v4", "set an alarm", 1.5),
]
BAD = [  # (split, file name, raw text, seconds, reason)
    ("train", "short", "this sentence is far too long for so short a clip", 0.25, "too_short_for_ctc"),
    ("val", "oov", "quiet zone", 1.5, "oov_characters"),
    ("test", "gone", "open the window", 1.5, "missing"),
]


def _tone(rng, seconds, sr=SR, channels=1):
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    wav = 0.3 * np.sin(2 * np.pi * rng.uniform(200, 800) * t) + 0.01 * rng.standard_normal(n)
    return np.stack([wav, 0.5 * wav], axis=1).astype(np.float32) if channels == 2 else wav.astype(np.float32)


def make_asr_corpus(root, good=GOOD, bad=BAD):
    """Real FLAC/WAV files + manifest.valid.jsonl as validate writes it (normalised text, the raw
    one in ``raw_text``); the 2nd train file is 22.05 kHz stereo WAV."""
    from seqflow.text.normalize import normalize_text

    rng = np.random.default_rng(0)
    rows = []
    for i, (split, spk, text, sec) in enumerate(good):
        stereo = i == 1
        rel = f"audio/{split}/utterance/{spk}-{i:03d}.{'wav' if stereo else 'flac'}"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        sr = 22050 if stereo else SR
        sf.write(root / rel, _tone(rng, sec, sr, 2 if stereo else 1), sr, subtype="PCM_16")
        rows.append(Utterance(rel, sec, normalize_text(text), spk, split, "utterance", {"raw_text": text}))
    for split, name, text, sec, reason in bad:
        rel = f"audio/{split}/utterance/{name}.flac"
        if reason != "missing":
            sf.write(root / rel, _tone(rng, sec), SR, subtype="PCM_16")
        rows.append(Utterance(rel, sec, normalize_text(text), "vx", split, "utterance", {"raw_text": text}))
    rows.append(Utterance("audio/train/positive/p.flac", 1.0, "activate", "v1", "train", "positive"))  # ignored
    write_manifest(root / VALID_MANIFEST_NAME, sorted(rows, key=lambda u: u.audio_filepath))
    return rows


def asr_cfg(tmp_path, *extra, kind="char"):
    return load_config([f"shards.root={tmp_path}/shards", f"data.root={tmp_path}/data", "model.name=ctc",
                        "model.family=seqflow.families.ctc",
                        f"+model.tokenizer.kind={kind}", "+model.tokenizer.vocab_size=40", "shards.min_shards=2",
                        "ray.num_workers=1", "trainer.num_workers=1", *extra])


@pytest.fixture()
def corpus(tmp_path):
    (tmp_path / "data").mkdir()
    make_asr_corpus(tmp_path / "data")
    return tmp_path / "data"


def test_utterance_shards_hold_normalized_text_resampled_audio_and_the_tokenizer(tmp_path, corpus):
    cfg = asr_cfg(tmp_path)
    s = shard_dataset(cfg, corpus, "md5a", progress=False)
    root = tmp_path / "shards" / f"md5a-{shard_config_hash(cfg)}"
    assert s.root == str(root) and s.tokenizer_dir == root / "tokenizer"
    assert s.num_samples == {"train": 6, "val": 3, "test": 3}
    tok = load_tokenizer(s.tokenizer_dir)
    assert tok.kind == "char" and not {"q", "x", "z"} & set(tok.tokens)
    by_text = {}
    for split in ("train", "val", "test"):
        assert verify_index(s.index_paths[split]) == []
        index = json.loads(s.index_paths[split].read_text())
        assert len(index["shards"]) == 2 and len(index["duration_percentiles"]) == 101
        got = list(iter_samples(s.index_paths[split], strict=True))
        assert [k for k, _, _ in got] == sorted(k for k, _, _ in got) and all(k.startswith(split) for k, _, _ in got)
        for key, wav, meta in got:
            assert wav.dtype == np.float32 and wav.ndim == 1
            assert meta["sample_rate"] == SR and meta["duration"] == pytest.approx(len(wav) / SR)
            assert meta["split"] == split and meta["source"] == "synthetic" and meta["speaker"].startswith("v")
            assert tok.decode(tok.encode(meta["text"])) == meta["text"]
            assert meta["tokens"] == tok.encode(meta["text"])  # tokenised once, at shard time
            by_text[meta["text"]] = (meta, wav)
    meta, wav = by_text["set a timer for ten minutes"]  # 22.05 kHz stereo WAV: resampled, down-mixed
    assert meta["raw_text"] == "Set a timer for 10 minutes" and abs(len(wav) - 3 * SR) <= 1
    assert by_text["turn on the lights"][0]["raw_text"] == "Turn on the lights."
    assert "it's seven thirty a m" in by_text


def test_bad_utterances_are_quarantined_in_the_shard_set_not_in_data(tmp_path, corpus, caplog):
    cfg = asr_cfg(tmp_path)
    with caplog.at_level(logging.INFO, logger="seqflow.shards"):
        s = shard_dataset(cfg, corpus, "md5a", progress=False)
    rows = read_jsonl(f"{s.root}/quarantine.jsonl")
    assert {(r["audio_filepath"].split("/")[-1], r["reason"]) for r in rows} == {
        ("short.flac", "too_short_for_ctc"),
        ("oov.flac", "oov_characters"), ("gone.flac", "missing")}
    for r in rows:
        assert r["stage"] == "shard" and r["detail"] and set(r) >= {"audio_filepath", "reason", "detail", "stage"}
    assert "'q'" in next(r["detail"] for r in rows if r["reason"] == "oov_characters")
    assert "CTC frames" in next(r["detail"] for r in rows if r["reason"] == "too_short_for_ctc")
    assert not (corpus / "quarantine.jsonl").exists()
    assert "shard train: 6 utterances, 1 quarantined" in caplog.text
    keys = {k for p in s.index_paths.values() for k, _, _ in iter_samples(p)}
    assert not any(name in k for k in keys for name in ("unicode", "short", "oov", "gone"))


def test_too_short_is_decided_on_the_decoded_audio_at_the_configured_hop(tmp_path, corpus):
    # at hop 320 (20 ms) 1.2 s gives 14 CTC frames: "good night" (10 tokens + 1 repeat) fits, the tripled
    # text (32 + 3) does not; the manifest says 3 s (37 frames) but the file holds 1.2 s: the audio decides
    write_manifest(corpus / VALID_MANIFEST_NAME, [
        Utterance("audio/val/utterance/v3-008.flac", 3.0, t, "v3", s, "utterance")
        for s, t in (("train", "good night"), ("val", "good night good night good night"), ("test", "good night"))])
    cfg = asr_cfg(tmp_path, "model.features.hop_length=320", "shards.min_shards=1")
    with pytest.raises(ShardError, match=r"split 'val' has no valid utterance for ASR \(too_short_for_ctc 1\)"):
        shard_dataset(cfg, corpus, "md5b", progress=False)
    root = tmp_path / "shards" / f"md5b-{shard_config_hash(cfg)}"
    assert [r["reason"] for r in read_jsonl(root / "quarantine.jsonl")] == ["too_short_for_ctc"]
    assert not (root / "val").exists() and (root / "train" / "index.json").is_file()  # failed at the audio pass


def test_a_split_without_valid_utterances_fails_before_any_shard_is_written(tmp_path, corpus):
    bad = [("val", "oov1", "zzz", 1.0, "oov_characters"), ("val", "oov2", "quiz", 1.0, "oov_characters")]
    make_asr_corpus(corpus, good=[g for g in GOOD if g[0] != "val"], bad=bad)
    cfg = asr_cfg(tmp_path)
    with pytest.raises(ShardError, match=r"split 'val' has no valid utterance for ASR \(oov_characters 2\)"):
        shard_dataset(cfg, corpus, "md5c", progress=False)
    root = tmp_path / "shards" / f"md5c-{shard_config_hash(cfg)}"
    assert sorted(p.name for p in root.iterdir()) == ["quarantine.jsonl", "tokenizer"]
    assert len(read_jsonl(root / "quarantine.jsonl")) == 2


def test_reuse_keeps_tars_quarantine_and_tokenizer_and_rebuilds_a_lost_tokenizer(tmp_path, corpus, caplog):
    cfg = asr_cfg(tmp_path)
    first = shard_dataset(cfg, corpus, "md5a", progress=False)
    root = tmp_path / "shards" / f"md5a-{shard_config_hash(cfg)}"
    mtimes = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    with caplog.at_level(logging.INFO, logger="seqflow.shards.writer"):
        again = shard_dataset(cfg, corpus, "md5a", progress=False)
    assert again == first and f"reusing shards at {root}" in caplog.text
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == mtimes
    tok_json = (root / "tokenizer" / "tokenizer.json").read_bytes()
    (root / "tokenizer" / "tokenizer.json").unlink()
    bad = root / "test" / "shard-000000.tar"
    bad.write_bytes(bad.read_bytes()[:700])
    repaired = shard_dataset(cfg, corpus, "md5a", progress=False)
    assert repaired == first and (root / "tokenizer" / "tokenizer.json").read_bytes() == tok_json
    assert verify_index(root / "test" / "index.json") == []
    assert len(read_jsonl(root / "quarantine.jsonl")) == 3  # reused splits keep their rows, test rewrote its own


def test_config_hash_separates_families_and_tracks_tokenizer_settings(tmp_path):
    ctc = shard_config_hash(asr_cfg(tmp_path))
    assert shard_config_hash(asr_cfg(tmp_path, "model.name=transformer",
                                     "model.family=seqflow.families.transformer")) == ctc  # the ASR models share shards
    assert shard_config_hash(load_config([f"shards.root={tmp_path}/shards", "shards.min_shards=2",
                                          "ray.num_workers=1", "trainer.num_workers=1"])) != ctc
    assert shard_config_hash(asr_cfg(tmp_path, kind="unigram")) != ctc
    assert shard_config_hash(asr_cfg(tmp_path, "model.tokenizer.vocab_size=80")) == ctc  # char ignores it
    assert shard_config_hash(asr_cfg(tmp_path, "model.features.hop_length=320")) != ctc
    assert shard_config_hash(asr_cfg(tmp_path, "clips.label_seconds=1.0")) == ctc
    with pytest.raises(ConfigError, match="model.family='seqflow.families.rnnt' cannot be imported"):
        shard_config_hash(asr_cfg(tmp_path, "model.name=rnnt", "model.family=seqflow.families.rnnt"))


def test_sentencepiece_tokenizer_is_saved_and_batches_decode_back_to_texts(tmp_path, corpus):
    cfg = asr_cfg(tmp_path, kind="unigram")
    s = shard_dataset(cfg, corpus, "md5a", progress=False)
    assert (s.tokenizer_dir / "spm.model").is_file()
    tok = load_tokenizer(s.tokenizer_dir)
    assert tok.kind == "unigram"
    dl = make_dataloader(s.index_paths["train"], 3, 0, 1, 0, shuffle=False, seed=0, tokenizer_dir=s.tokenizer_dir)
    texts = []
    for batch in dl:
        assert set(batch) == {"audio", "audio_lengths", "keys", "texts", "tokens", "token_lengths"}
        for i, text in enumerate(batch["texts"]):
            n = int(batch["token_lengths"][i])
            assert tok.decode(batch["tokens"][i, :n].tolist()) == text and not batch["tokens"][i, n:].any()
            assert tok.unk_id not in batch["tokens"][i, :n].tolist()
        texts += batch["texts"]
    assert len(texts) == 6
