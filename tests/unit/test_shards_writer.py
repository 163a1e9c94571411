"""Shard writer: real tars, index.json + sha256, atomic split folders, min_shards, reuse."""

import hashlib
import json
import logging
import tarfile
from pathlib import Path

import numpy as np
import pytest

from seqflow.config import load_config
from seqflow.errors import ShardError
from seqflow.shards.writer import shard_config_hash, shard_dataset, verify_index, write_shards

SR = 16000


def samples(n, seconds=0.5, seed=0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        yield {"__key__": f"s-{i:04d}", "audio": (0.1 * rng.standard_normal(int(seconds * SR))).astype(np.float32),
               "sample_rate": SR, "txt": f"word {i}", "json": {"duration": seconds, "segments": []}}


def _leftovers(parent):
    return [p.name for p in parent.iterdir() if p.name.startswith(".")]


def test_index_lists_every_shard_with_matching_sha256_and_bytes(tmp_path):
    out = tmp_path / "set" / "train"
    index = write_shards(samples(12), out, "train", target_bytes=40_000, min_shards=2, fmt="flac",
                         data_md5="abc", config_hash="h1", progress=False)
    on_disk = json.loads((out / "index.json").read_text())
    assert on_disk == index
    assert index["split"] == "train" and index["num_samples"] == 12 and index["format"] == "flac"
    assert index["data_md5"] == "abc" and index["config_hash"] == "h1"
    assert index["num_seconds"] == pytest.approx(6.0)
    assert len(index["shards"]) >= 3  # 12 x ~16 KB FLAC at 40 KB per tar
    assert sorted(p.name for p in out.iterdir()) == sorted([e["name"] for e in index["shards"]] + ["index.json"])
    keys = []
    for e in index["shards"]:
        data = (out / e["name"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == e["sha256"] and len(data) == e["bytes"]
        assert e["bytes"] <= 40_000 + 10_240  # soft limit: only tar end padding beyond the target
        with tarfile.open(out / e["name"]) as tf:
            names = tf.getnames()
        assert len(names) == 3 * e["num_samples"]
        keys += sorted({n.split(".")[0] for n in names})
    assert keys == [f"s-{i:04d}" for i in range(12)]
    assert sum(e["num_samples"] for e in index["shards"]) == 12
    assert _leftovers(out.parent) == [] and verify_index(out / "index.json") == []


def test_min_shards_spreads_samples_evenly(tmp_path):
    index = write_shards(samples(10), tmp_path / "val", "val", target_bytes=10**9, min_shards=4, fmt="wav",
                         progress=False)
    assert [e["num_samples"] for e in index["shards"]] == [3, 3, 2, 2]
    assert [e["name"] for e in index["shards"]] == [f"shard-{i:06d}.tar" for i in range(4)]
    with tarfile.open(tmp_path / "val" / "shard-000003.tar") as tf:
        assert tf.getnames() == ["s-0008.json", "s-0008.txt", "s-0008.wav", "s-0009.json", "s-0009.txt", "s-0009.wav"]
    assert verify_index(tmp_path / "val" / "index.json") == []
    assert _leftovers(tmp_path) == []


def test_too_few_samples_for_min_shards_is_a_clear_error_and_leaves_nothing(tmp_path):
    with pytest.raises(ShardError, match="3 samples, fewer than shards.min_shards=4"):
        write_shards(samples(3), tmp_path / "test", "test", target_bytes=10**9, min_shards=4, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_failure_mid_write_keeps_the_old_split_and_leaves_no_temp(tmp_path):
    out = tmp_path / "train"
    before = write_shards(samples(4), out, "train", target_bytes=10**9, min_shards=1, progress=False)

    def broken():
        yield from samples(3)
        raise RuntimeError("decoder died")

    with pytest.raises(RuntimeError, match="decoder died"):
        write_shards(broken(), out, "train", target_bytes=10**9, min_shards=1, progress=False)
    assert json.loads((out / "index.json").read_text()) == before
    assert verify_index(out / "index.json") == [] and _leftovers(tmp_path) == []


def test_same_samples_give_identical_bytes_and_rewrite_replaces(tmp_path):
    a = write_shards(samples(5), tmp_path / "a", "train", target_bytes=10**9, min_shards=1, progress=False)
    b = write_shards(samples(5), tmp_path / "b", "train", target_bytes=10**9, min_shards=1, progress=False)
    assert [e["sha256"] for e in a["shards"]] == [e["sha256"] for e in b["shards"]]
    c = write_shards(samples(6, seed=1), tmp_path / "a", "train", target_bytes=10**9, min_shards=2, progress=False)
    assert c["num_samples"] == 6 and verify_index(tmp_path / "a" / "index.json") == []
    assert _leftovers(tmp_path) == []


def test_verify_index_reports_corrupt_and_missing_shards(tmp_path):
    write_shards(samples(6), tmp_path / "t", "train", target_bytes=10**9, min_shards=3, progress=False)
    idx = tmp_path / "t" / "index.json"
    p0 = tmp_path / "t" / "shard-000000.tar"
    data = bytearray(p0.read_bytes())
    data[600] ^= 0xFF
    p0.write_bytes(bytes(data))
    (tmp_path / "t" / "shard-000002.tar").unlink()
    problems = verify_index(idx)
    assert any("shard-000000.tar: sha256 differs" in p for p in problems)
    assert any("shard-000002.tar: missing" in p for p in problems)
    assert "nope/index.json: unreadable index" in verify_index(tmp_path / "nope" / "index.json")[0]


def _cfg(tmp_path, *extra):
    return load_config(["model=trigger_word", f"shards.root={tmp_path}/shards", f"data.root={tmp_path}/data", "clips.duration=2.0",
                        "clips.train_clips=8", "clips.val_clips=4", "clips.test_clips=4", "shards.min_shards=2",
                        "ray.num_workers=2", "trainer.num_workers=1", f"augment.cache_dir={tmp_path}/cache/rirs",
                        "augment.rir_bank_size=8", *extra])


def test_config_hash_tracks_augmentation_and_noise_files_but_not_the_cache_folder(tmp_path):
    from omegaconf import open_dict

    base = shard_config_hash(_cfg(tmp_path))
    assert shard_config_hash(_cfg(tmp_path, f"augment.cache_dir={tmp_path}/elsewhere")) == base
    assert shard_config_hash(_cfg(tmp_path, "augment.train.clip.reverb.p=0.2")) != base
    assert shard_config_hash(_cfg(tmp_path, "augment.eval.clip.gain.dbfs=[-30,-25]")) != base
    assert shard_config_hash(_cfg(tmp_path, "augment.rooms.rt60=[0.3,0.6]")) != base
    assert shard_config_hash(_cfg(tmp_path, "augment.rir_bank_size=9")) != base
    off = shard_config_hash(_cfg(tmp_path, "augment.enabled=false"))
    assert off != base and off == shard_config_hash(_cfg(tmp_path, "augment.enabled=false", "augment.rir_bank_size=9"))
    plain = _cfg(tmp_path)
    with open_dict(plain):
        del plain["augment"]
    assert shard_config_hash(plain) == off  # augmentation off: the hash of shards made before it existed
    noise = tmp_path / "noise"
    (noise / "sub").mkdir(parents=True)
    with_noise = _cfg(tmp_path, f"augment.noise_dirs=[{noise}]")
    assert shard_config_hash(with_noise) == base  # an empty folder adds no file
    (noise / "sub" / "hum.wav").write_bytes(b"x" * 100)
    (noise / "notes.txt").write_text("not audio")
    one = shard_config_hash(with_noise)
    assert one != base
    (noise / "sub" / "hum.wav").write_bytes(b"x" * 200)
    assert shard_config_hash(with_noise) not in (base, one)
    with pytest.raises(ShardError, match="is not a folder"):
        shard_config_hash(_cfg(tmp_path, f"augment.noise_dirs=[{tmp_path}/missing]"))


def test_config_hash_is_stable_and_tracks_shard_relevant_keys(tmp_path):
    base = shard_config_hash(_cfg(tmp_path))
    assert base == shard_config_hash(_cfg(tmp_path)) and len(base) == 12
    assert shard_config_hash(_cfg(tmp_path, "clips.label_seconds=1.0")) != base  # the synthesis guard
    # labels are derived at load from the net's own geometry: stride / kernel / hop reuse the shards
    assert shard_config_hash(_cfg(tmp_path, "model.net.conv_stride=2")) == base
    assert shard_config_hash(_cfg(tmp_path, "model.net.conv_kernel=11")) == base
    assert shard_config_hash(_cfg(tmp_path, "model.features.hop_length=320")) == base
    assert shard_config_hash(_cfg(tmp_path, "ray.num_workers=4")) != base  # more ranks need more shards
    assert shard_config_hash(_cfg(tmp_path, "model.net.gru_hidden=64")) == base
    assert shard_config_hash(_cfg(tmp_path, "trainer.max_epochs=1")) == base


def test_shard_dataset_writes_then_reuses_then_repairs(tmp_path, caplog):
    from test_shards_clips import make_corpus

    (tmp_path / "data").mkdir()
    make_corpus(tmp_path / "data")
    cfg = _cfg(tmp_path)
    first = shard_dataset(cfg, tmp_path / "data", "md5x", progress=False)
    root = tmp_path / "shards" / f"md5x-{shard_config_hash(cfg)}"
    assert first.root == str(root) and first.num_samples == {"train": 8, "val": 4, "test": 4}
    for split, path in first.index_paths.items():
        assert path == root / split / "index.json" and verify_index(path) == []
        index = json.loads(path.read_text())
        assert len(index["shards"]) >= 2 and index["data_md5"] == "md5x"
        assert index["config_hash"] == shard_config_hash(cfg)
    mtimes = {p: p.stat().st_mtime_ns for p in root.rglob("*.tar")}
    with caplog.at_level(logging.INFO, logger="seqflow.shards.writer"):
        again = shard_dataset(cfg, tmp_path / "data", "md5x", progress=False)
    assert again == first and f"reusing shards at {root}" in caplog.text
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*.tar")} == mtimes
    # a damaged val shard is detected by sha256 and only that split is rewritten
    bad = root / "val" / "shard-000000.tar"
    bad.write_bytes(bad.read_bytes()[:1024])
    repaired = shard_dataset(cfg, tmp_path / "data", "md5x", progress=False)
    assert repaired.num_samples == first.num_samples and verify_index(root / "val" / "index.json") == []
    assert (root / "train" / "shard-000000.tar").stat().st_mtime_ns == mtimes[root / "train" / "shard-000000.tar"]
    assert _leftovers(root) == []


def test_clip_shards_hold_segment_times_and_serve_any_conv_stride(tmp_path, caplog):
    """No labels in the json; a net with another stride reuses the shards and labels the same seconds."""
    from test_shards_clips import make_corpus

    from seqflow.lit.factory import build_module
    from seqflow.shards.labels import frame_labels
    from seqflow.shards.reader import iter_samples, make_dataloader

    (tmp_path / "data").mkdir()
    make_corpus(tmp_path / "data")
    cfg4, cfg2 = _cfg(tmp_path), _cfg(tmp_path, "model.net.conv_stride=2")
    first = shard_dataset(cfg4, tmp_path / "data", "md5x", progress=False)
    metas = [meta for _key, _wav, meta in iter_samples(first.index_paths["train"])]
    assert metas and all("labels" not in m and "label_step_s" not in m and "segments" in m for m in metas)
    mtimes = {p: p.stat().st_mtime_ns for p in Path(first.root).rglob("*.tar")}
    with caplog.at_level(logging.INFO, logger="seqflow.shards.writer"):
        second = shard_dataset(cfg2, tmp_path / "data", "md5x", progress=False)
    assert second == first and f"reusing shards at {first.root}" in caplog.text
    assert {p: p.stat().st_mtime_ns for p in Path(first.root).rglob("*.tar")} == mtimes
    batch = next(iter(make_dataloader(first.index_paths["train"], 8, 0, 1, 0, shuffle=False, seed=0)))
    assert any(batch["positive_ends"])
    for cfg, steps in ((cfg4, 50), (cfg2, 100)):  # 2.0 s at 40 ms and at 20 ms per step
        module = build_module(cfg)
        ty = module.net.steps_for_samples(batch["audio"].shape[1], 160)
        labels = module.labels(batch, ty)
        assert module.label_steps == steps and labels.shape == (8, ty)
        for row, ends in zip(labels, batch["positive_ends"]):
            want = frame_labels(ends, batch["audio"].shape[1], 16000, 160, module.net, steps)
            assert row.tolist() == want.tolist()
