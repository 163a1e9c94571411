"""Hard-negative mining (seqflow.mining): false accepts → windows, train audio only, round 2's shards,
the nested MLflow runs, and nothing changes while it is off."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from seqflow.config import load_config
from seqflow.errors import ConfigError, SeqflowError, ShardError
from seqflow.mining import (MANIFEST_NAME, MiningConfig, MiningResult, Source, corpus_sources, mine_round,
                            mine_windows, train_clip_sources, write_mined)
from seqflow.shards.clips import synthesize_clip
from seqflow.shards.writer import shard_config_hash, shard_dataset


class FakeDetector:
    """Step ``k`` scores the loudest sample of ``[k*hop, (k+1)*hop)``; its time is that span's end."""

    def __init__(self, sample_rate: int = 1000, step_s: float = 0.1, threshold: float = 0.7) -> None:
        self.sample_rate, self.step_s, self.first_step_end_s, self.threshold = sample_rate, step_s, step_s, threshold
        self.calls = 0

    def scores_many(self, wavs):
        self.calls += 1
        hop = int(round(self.step_s * self.sample_rate))
        return [np.abs(np.asarray(w)[: len(w) // hop * hop]).reshape(-1, hop).max(axis=1).astype(np.float32)
                for w in wavs]


def _burst(wav, t0, value, sr=1000):
    wav[int(t0 * sr):int((t0 + 0.1) * sr)] = value
    return wav


def _sources():
    sr = 1000
    clip = np.full(5 * sr, 0.01, np.float32)
    for t0, v in ((1.6, 0.9), (2.6, 0.95), (3.5, 0.8)):  # a hit, a false accept over the word, a false accept
        _burst(clip, t0, v)
    corpus = np.full(3 * sr, 0.01, np.float32)
    for t0, v in ((0.3, 0.99), (2.0, 0.75)):  # too close to the recording's start, a false accept
        _burst(corpus, t0, v)
    return [Source(clip, {"source": "train_clip", "source_key": "train-000000"}, [(1.0, 1.4)]),
            Source(corpus, {"source": "corpus", "source_key": "audio/train/negative/x.flac", "kind": "negative"})]


def _mine(max_windows=10):
    return mine_windows(FakeDetector(), _sources(), threshold=0.7, window_s=1.5, max_windows=max_windows,
                        label_seconds=0.5, tolerance_s=0.1, refractory_s=0.5, num_streams=1)


def test_false_accepts_become_the_windows_before_them_and_hits_do_not():
    res = _mine()
    assert res.num_false_accepts == 4 and res.num_skipped == 2  # over the trigger word; cut short at the start
    assert [(r["source_key"], r["time"], r["window_start"], r["score"]) for _w, r in res.windows] == [
        ("train-000000", 3.6, 2.1, 0.8), ("audio/train/negative/x.flac", 2.1, 0.6, 0.75)]
    for wav, row in res.windows:
        assert row["split"] == "train" and wav.shape == (1500,) and row["duration"] == 1.5
        assert np.isclose(wav[-1], row["score"])  # the burst that fired ends the window
    m = res.metrics()
    assert m["mining/num_windows"] == 2 and m["mining/hours_scored"] == pytest.approx(8 / 3600)
    assert m["mining/fa_per_hour"] == pytest.approx(4 / ((8 - 1.1) / 3600))  # per hour outside the hit region


def test_max_windows_keeps_the_highest_scores():
    assert [r["score"] for _w, r in _mine(max_windows=1).windows] == [0.8]
    assert _mine(max_windows=0).windows == []


def test_only_train_audio_is_ever_read(tmp_path, monkeypatch):
    from test_shards_clips import make_corpus

    import seqflow.audio.io as audio_io

    make_corpus(tmp_path)
    read, real = [], audio_io.read_audio
    monkeypatch.setattr(audio_io, "read_audio", lambda p, **kw: (read.append(str(p)), real(p, **kw))[1])
    got = list(corpus_sources(tmp_path, 16000))
    assert len(got) == len(read) == 5 and all("/train/" in p for p in read)
    assert {s.info["kind"] for s in got} == {"negative", "background"}
    val_index = tmp_path / "index.json"
    val_index.write_text(json.dumps({"split": "val", "shards": []}))
    with pytest.raises(SeqflowError, match="only train audio"):
        list(train_clip_sources(val_index))


def test_mining_config_defaults_off_and_bad_values_are_config_errors():
    cfg = load_config([])
    assert MiningConfig.from_config(cfg) == MiningConfig(enabled=False, threshold=0.5, window_s=1.5,
                                                         max_windows=2000, mined_fraction=0.3)
    assert MiningConfig.from_config(load_config(["clips.hard_negative_mining.threshold=null"])).threshold is None
    for bad in ("threshold=0", "window_s=0", "max_windows=-1", "mined_fraction=1.5"):
        with pytest.raises(ConfigError, match="hard_negative_mining"):
            MiningConfig.from_config(load_config([f"clips.hard_negative_mining.{bad}"]))


def test_mining_settings_do_not_change_the_shard_hash():
    plain = ["model=trigger_word", "augment.enabled=false", "evaluate.eval_data=/nonexistent"]  # no real-speech bank
    base = load_config(plain)
    on = load_config([*plain, "clips.hard_negative_mining.enabled=true",
                      "clips.hard_negative_mining.threshold=0.2", "clips.hard_negative_mining.max_windows=7"])
    assert shard_config_hash(on) == shard_config_hash(base) == "056239359d1f"  # the hash before mining existed


def test_clips_without_mined_windows_are_unchanged_and_mined_ones_are_flagged():
    rng0 = np.random.default_rng(1)
    pos = [(np.full(800, 0.3, np.float32), {"text": "activate", "speaker": "a"})]
    neg = [(np.full(1000, 0.2, np.float32), {"text": "banana", "speaker": "b"})]
    mined = [(np.full(1500, 0.1, np.float32), {"mined": True})]
    bg = rng0.standard_normal(16000 * 4).astype(np.float32)
    for seed in range(10):
        a = synthesize_clip(np.random.default_rng(seed), bg, pos, neg, 3.0, 16000, 2, 2)
        b = synthesize_clip(np.random.default_rng(seed), bg, pos, neg, 3.0, 16000, 2, 2, mined_fraction=0.3)
        assert np.array_equal(a[0], b[0]) and a[1] == b[1] and all("mined" not in s for s in a[1])
    flagged = [s for seed in range(20) for s in synthesize_clip(
        np.random.default_rng(seed), bg, pos, neg, 3.0, 16000, 2, 2, mined_negatives=mined, mined_fraction=1.0)[1]
        if s["kind"] == "negative"]
    assert flagged and all(s.get("mined") is True and s["end"] - s["start"] == pytest.approx(1500 / 16000)
                           for s in flagged)


def _cfg(tmp_path, *extra):
    return load_config([f"shards.root={tmp_path}/shards", f"data.root={tmp_path}/data", "clips.duration=2.0",
                        "clips.train_clips=8", "clips.val_clips=4", "clips.test_clips=4", "shards.min_shards=2",
                        "ray.num_workers=2", "trainer.num_workers=1", "augment.enabled=false",
                        "clips.hard_negative_mining.enabled=true", "clips.hard_negative_mining.threshold=0.15",
                        "clips.hard_negative_mining.window_s=0.2", "clips.hard_negative_mining.max_windows=5",
                        "clips.hard_negative_mining.mined_fraction=1.0", "evaluate.refractory_s=0.5",
                        "clips.label_seconds=0.4", *extra])


def test_mine_round_writes_train_windows_and_round_two_train_shards_only(tmp_path, monkeypatch):
    from test_shards_clips import make_corpus

    import seqflow.mining as mining
    from seqflow.shards.reader import iter_samples

    (tmp_path / "data").mkdir()
    make_corpus(tmp_path / "data")
    cfg = _cfg(tmp_path)
    s = shard_dataset(cfg, tmp_path / "data", "md5x", progress=False)
    shards = {"root": s.root, "index": {k: str(v) for k, v in s.index_paths.items()}, "num_samples": s.num_samples}
    before = {p: p.stat().st_mtime_ns for p in Path(s.root).rglob("*.tar")}
    det = FakeDetector(sample_rate=16000, step_s=0.04)
    monkeypatch.setattr(mining, "load_package_detector", lambda _pkg: det)
    out = mine_round(cfg, tmp_path / "pkg", shards, "run1")
    assert out["num_windows"] == 5 and out["metrics"]["mining/num_windows"] == 5
    assert out["metrics"]["mining/hours_scored"] > 0 and out["metrics"]["mining/fa_per_hour"] > 0
    folder = Path(s.root) / "mined" / "run1"
    rows = [json.loads(line) for line in (folder / MANIFEST_NAME).read_text().splitlines()]
    assert len(rows) == 5 and all(r["split"] == "train" and r["mined"] and (folder / r["audio_filepath"]).is_file()
                                  for r in rows)
    assert all(r["source_key"].startswith(("train-", "audio/train/")) for r in rows)
    assert out["shards"]["index"]["train"] == str(folder / "train" / "index.json")
    assert {k: out["shards"]["index"][k] for k in ("val", "test")} == {k: shards["index"][k] for k in ("val", "test")}
    segs = [seg for _k, _w, meta in iter_samples(out["shards"]["index"]["train"]) for seg in meta["segments"]]
    assert any(seg.get("mined") for seg in segs)
    assert not any(seg.get("mined") for k in ("train", "val", "test")
                   for _k, _w, meta in iter_samples(shards["index"][k]) for seg in meta["segments"])
    assert {p: p.stat().st_mtime_ns for p in Path(s.root).glob("*/*.tar")} == before  # round 1's shards untouched
    calls = det.calls
    again = mine_round(cfg, tmp_path / "pkg", shards, "run1")  # a retried task reuses the mined folder
    assert det.calls == calls and again["shards"] == out["shards"]


def test_a_mined_window_of_another_split_is_refused(tmp_path):
    from test_shards_clips import make_corpus, make_source

    make_corpus(tmp_path)
    res = MiningResult([(np.zeros(800, np.float32), {"split": "val", "source": "x", "source_key": "y"})],
                       1, 1.0, 1.0, 0, 0.5)
    write_mined(tmp_path / "mined", res, 16000, {})
    src = make_source(tmp_path, mined_manifest=tmp_path / "mined" / MANIFEST_NAME, mined_fraction=0.5)
    with pytest.raises(ShardError, match="only train audio"):
        next(src.clips("train"))
    assert next(src.clips("val"))  # val/test clips never read the mined windows


def test_rounds_nest_under_one_parent_run_with_the_before_and_after(tmp_path, monkeypatch):
    import mlflow

    from seqflow import stages
    from seqflow.tracking.runs import child_runs, standard_tags, start_training_run

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = load_config([f"tracking.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
                       f"tracking.artifact_location={tmp_path}/art"])
    try:
        data = {"md5": "m", "git_commit": "c"}
        parent = stages.start_mining_run(cfg, {"root": "/s"}, data)
        tags = standard_tags("m", "c", "/s", 2)
        r1 = start_training_run(cfg, tags, parent_run_id=parent, run_name="trigger_word-round-1")
        r2 = start_training_run(cfg, tags, parent_run_id=parent, run_name="trigger_word-round-2")
        mined = {"metrics": {"mining/num_windows": 3.0, "mining/fa_per_hour": 12.0},
                 "tags": {"mining.windows_dir": "/w"}}
        stages.record_mining(cfg, parent, mined, {"metrics": {"val/frr": 0.5, "train/loss": 1.0}}, r2,
                             {"metrics": {"val/frr": 0.25}})
        client = mlflow.MlflowClient()
        assert [r.info.run_id for r in child_runs(parent)] == [r1, r2]
        assert [r.info.run_name for r in child_runs(parent)] == ["trigger_word-round-1", "trigger_word-round-2"]
        p = client.get_run(parent).data
        assert p.metrics == {"mining/num_windows": 3.0, "mining/fa_per_hour": 12.0, "round_1/val/frr": 0.5,
                             "round_2/val/frr": 0.25}
        assert p.tags["mining.registered_round"] == "2" and p.tags["data.dvc_md5"] == "m"
        assert client.get_run(r2).data.metrics == mined["metrics"] and client.get_run(r1).data.metrics == {}
    finally:
        mlflow.set_tracking_uri(None)


def test_the_package_loader_follows_the_family_recorded_in_the_package(tmp_path, monkeypatch):
    import seqflow.serve.detector as plain
    import seqflow.serve.embedding_detector as emb
    from seqflow.mining import load_package_detector

    monkeypatch.setattr(plain, "load_detector", lambda d: ("log-mel", d))
    monkeypatch.setattr(emb, "load_embedding_detector", lambda d: ("embedding", d))
    (tmp_path / "detector.json").write_text(json.dumps({"model": emb.MODEL}))
    assert load_package_detector(tmp_path) == ("embedding", tmp_path)
    (tmp_path / "detector.json").write_text(json.dumps({"model": "trigger_word"}))
    assert load_package_detector(tmp_path) == ("log-mel", tmp_path)
