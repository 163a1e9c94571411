"""Evaluation sets: manifests, dev/eval halves, content hashes, metrics on the eval half only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from seqflow.audio.features import LogMel
from seqflow.errors import ConfigError
from seqflow.evaluate.on_sets import asr_rows, contains_phrase, prefixed, trigger_word_on_set
from seqflow.evaluate.sets import (assign_half, check_eval_sets, load_eval_sets, read_set, set_tags,
                                   split_content_hash)
from seqflow.models.trigger_word import TriggerWordNet
from seqflow.serve.detector import TriggerWordDetector


def _set(tmp_path: Path, rows: list[dict]) -> Path:
    folder = tmp_path / "words"
    (folder / "audio").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for r in rows:
        sf.write(folder / r["audio_filepath"], (0.01 * rng.standard_normal(8000)).astype(np.float32), 16000)
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder / "manifest.jsonl"


ROWS = [{"audio_filepath": "audio/a.wav", "duration": 0.5, "text": "Activate!", "lang": "en", "split": "dev"},
        {"audio_filepath": "audio/b.wav", "duration": 0.5, "text": "please activate it", "lang": "en", "split": "eval"},
        {"audio_filepath": "audio/c.wav", "duration": 0.5, "text": "activated", "lang": "en", "split": "eval"},
        {"audio_filepath": "audio/d.wav", "duration": 0.5, "text": "", "lang": "cs", "split": "eval"},
        {"audio_filepath": "audio/e.wav", "duration": 0.5, "text": "bonjour", "lang": "fr", "split": "eval",
         "confusable": True}]


def test_read_set_resolves_paths_and_halves(tmp_path: Path) -> None:
    es = read_set("words", _set(tmp_path, ROWS), ["asr", "trigger_word"])
    assert all(Path(r["audio_filepath"]).is_absolute() for r in es.rows)
    assert [Path(r["audio_filepath"]).name for r in es.half("dev")] == ["a.wav"]
    assert len(es.half("eval")) == 4
    assert es.content_hash() == read_set("words", es.manifest, ["asr"]).content_hash()
    assert set(set_tags([es])) == {"eval.words.sha256"}


def test_assign_half_is_deterministic_and_by_speaker() -> None:
    rows = [{"audio_filepath": f"x/{i}.wav", "speaker": f"s{i % 7}"} for i in range(200)]
    halves = [assign_half(r) for r in rows]
    assert halves == [assign_half(r) for r in rows]
    by_speaker = {}
    for r, h in zip(rows, halves):
        by_speaker.setdefault(r["speaker"], set()).add(h)
    assert all(len(v) == 1 for v in by_speaker.values())  # a speaker never straddles the halves
    files = [assign_half({"audio_filepath": f"f{i}.wav"}) for i in range(1000)]
    assert 400 < files.count("dev") < 600


def test_absent_manifest_skipped_missing_audio_is_an_error(tmp_path: Path, caplog) -> None:
    manifest = _set(tmp_path, ROWS)
    cfg = [{"name": "words", "manifest": str(manifest), "kinds": ["asr"]},
           {"name": "gone", "manifest": str(tmp_path / "nope.jsonl"), "kinds": ["asr"]}]
    with caplog.at_level("INFO"):
        sets = load_eval_sets(cfg)
    assert [s.name for s in sets] == ["words"] and "gone skipped" in caplog.text
    assert load_eval_sets(cfg, kind="trigger_word") == []
    (manifest.parent / "audio" / "c.wav").unlink()
    with pytest.raises(ConfigError, match="words.*1 of 5 audio files missing"):
        check_eval_sets(sets)
    with pytest.raises(ConfigError, match="kinds"):
        read_set("x", manifest, ["speaker_id"])


def test_phrase_match_is_whole_words_normalised() -> None:
    assert contains_phrase("Please ACTIVATE, now", "activate")
    assert not contains_phrase("activated", "activate")
    assert contains_phrase("hey jarvis what time", "Hey Jarvis")


def test_trigger_word_metrics_on_the_eval_half_only(tmp_path: Path) -> None:
    es = read_set("words", _set(tmp_path, ROWS), ["trigger_word"])
    torch.manual_seed(0)
    det = TriggerWordDetector(TriggerWordNet(40, conv_channels=8, gru_hidden=4), LogMel(), threshold=0.0)
    m = trigger_word_on_set(det, es, "activate")  # threshold 0: everything fires
    assert m["num_positives"] == 1 and m["detected"] == 1.0  # b only; a is in the dev half
    # the sound-alike is scored alone, not in the negative stream (2 other negatives of 0.5 s)
    assert m["num_false_accepts"] >= 1 and m["hours"] == pytest.approx(2 * 0.5 / 3600)
    assert m["num_confusables"] == 1 and m["confusable_trigger_rate"] == 1.0 and m["num_confusable_triggers"] == 1
    assert m["fa_per_hour_all"] == pytest.approx((m["num_false_accepts"] + 1) / (3 * 0.5 / 3600))
    det.threshold = 1.01  # nothing fires
    m = trigger_word_on_set(det, es, "activate")
    assert m["detected"] == 0.0 and m["num_false_accepts"] == 0 and m["fa_per_hour"] == 0.0
    assert set(prefixed("words", m)) >= {"eval/words/detected", "eval/words/fa_per_hour"}


def test_asr_rows_are_english_with_text() -> None:
    rows = [dict(r, audio_filepath="/x/" + r["audio_filepath"]) for r in ROWS]
    from seqflow.evaluate.sets import EvalSet

    s = EvalSet("w", Path("/x/m.jsonl"), ("asr",), rows)
    assert [r["text"] for r in asr_rows(s)] == ["please activate it", "activated"]


def test_split_content_hash_ignores_order_and_sees_content() -> None:
    w = np.arange(10, dtype=np.float32)
    a = [("k1", w, {"text": "x"}), ("k2", w + 1, {"text": "y"})]
    assert split_content_hash(a) == split_content_hash(a[::-1])
    assert split_content_hash(a) != split_content_hash([("k1", w, {"text": "x"}), ("k2", w + 2, {"text": "y"})])


def test_negative_streams_hold_only_non_phrase_non_sound_alike_rows_of_the_half(tmp_path: Path) -> None:
    from seqflow.evaluate.on_sets import negative_streams

    es = read_set("words", _set(tmp_path, ROWS), ["trigger_word"])
    det = TriggerWordDetector(TriggerWordNet(40, conv_channels=8, gru_hidden=4), LogMel(), threshold=0.0)
    assert negative_streams(det, es, "activate", "dev").seconds == 0.0  # dev holds the phrase only
    scored = negative_streams(det, es, "activate", "eval")  # c ("activated") and d; not b (phrase), e (sound-alike)
    assert scored.seconds == pytest.approx(2 * 0.5) and scored.num_positives == 0
