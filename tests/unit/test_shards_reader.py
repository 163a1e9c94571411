"""Reader: disjoint shards per rank/worker, equal batch counts on odd shard counts, corrupt shards."""

import json
import logging

import numpy as np
import pytest
import torch

from seqflow.errors import ShardError
from seqflow.shards.reader import check_shards_for_ranks, iter_samples, make_dataloader
from seqflow.shards.writer import _encode, _finish_index, _Shards

SR = 16000
COUNTS = [7, 3, 5, 2, 6]  # 5 shards of unequal size, 23 samples


def write_counts(folder, counts, fmt="flac"):
    """Real tars with exactly ``counts`` samples each (variable lengths), plus index.json."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    shards, originals, i = _Shards(folder), {}, 0
    for c in counts:
        shards.open_next()
        for _ in range(c):
            n = int(SR * (0.2 + 0.05 * (i % 4)))
            wav = (0.2 * rng.standard_normal(n)).astype(np.float32)
            key = f"k{i:03d}"
            segments = [{"kind": "positive" if j % 2 == 0 else "negative", "start": 0.01 * j,
                         "end": 0.01 * j + 0.005, "text": "w", "speaker": "s"} for j in range(i % 4)]
            enc, sec = _encode({"__key__": key, "audio": wav, "sample_rate": SR, "txt": f"t{i}",
                                "json": {"duration": n / SR, "segments": segments}}, fmt)
            shards.write(enc, sec)
            originals[key] = (wav, segments)
            i += 1
    shards.close()
    _finish_index(folder, shards.stats, "train", fmt, "md5", "hash")
    return folder / "index.json", originals


def shard_keys(index_path):
    index = json.loads(index_path.read_text())
    out, i = [], 0
    for e in index["shards"]:
        out.append({f"k{j:03d}" for j in range(i, i + e["num_samples"])})
        i += e["num_samples"]
    return out


def epoch_keys(dl):
    batches = list(dl)
    return batches, [k for b in batches for k in b["keys"]]


@pytest.mark.parametrize("num_workers", [1, 2])
def test_odd_shard_count_gives_equal_batches_and_disjoint_shards_per_rank(tmp_path, num_workers):
    index, _ = write_counts(tmp_path / "train", COUNTS)
    per_shard = shard_keys(index)
    bs, world = 2, 2
    expected = (23 // (world * bs)) // num_workers * num_workers  # 5 -> 4 with 2 workers
    seen = []
    for rank in range(world):
        dl = make_dataloader(index, bs, rank, world, num_workers, shuffle=True, seed=3)
        assert len(dl) == expected
        for _epoch in range(2):
            batches, keys = epoch_keys(dl)
            assert len(batches) == expected and all(len(b["keys"]) == bs for b in batches)
        allowed = set().union(*per_shard[rank::world])  # rank 1 has only 5 samples and must cycle
        assert set(keys) <= allowed
        seen.append(set(keys))
    assert not seen[0] & seen[1]


def test_each_dataloader_worker_reads_its_own_shards(tmp_path):
    index, _ = write_counts(tmp_path / "train", [4, 4, 4, 4])
    per_shard = shard_keys(index)
    dl = make_dataloader(index, 2, rank=1, world_size=2, num_workers=2, shuffle=False, seed=0)
    _, keys = epoch_keys(dl)
    # rank 1 -> shards 1, 3; DataLoader alternates workers: worker 0 reads shard 1, worker 1 shard 3
    assert keys == sorted(per_shard[1])[:2] + sorted(per_shard[3])[:2] + sorted(per_shard[1])[2:] + \
        sorted(per_shard[3])[2:]


def test_batches_hold_padded_audio_lengths_positive_ends_and_texts(tmp_path):
    index, originals = write_counts(tmp_path / "train", COUNTS)
    dl = make_dataloader(index, 4, rank=0, world_size=1, num_workers=0, shuffle=False, seed=0)
    batch = next(iter(dl))
    assert set(batch) == {"audio", "audio_lengths", "positive_ends", "keys", "texts"}
    assert batch["audio"].dtype == torch.float32 and batch["audio_lengths"].dtype == torch.int64
    assert len(batch["positive_ends"]) == 4
    assert batch["audio"].shape == (4, int(batch["audio_lengths"].max()))
    for i, key in enumerate(batch["keys"]):
        wav, segments = originals[key]
        n = int(batch["audio_lengths"][i])
        assert n == len(wav) and batch["texts"][i] == "t" + str(int(key[1:]))
        assert np.allclose(batch["audio"][i, :n].numpy(), wav, atol=1e-4)  # 16-bit PCM
        assert not batch["audio"][i, n:].any()
        assert batch["positive_ends"][i] == [g["end"] for g in segments if g["kind"] == "positive"]


def test_shuffle_is_deterministic_per_seed_and_changes_per_epoch(tmp_path):
    index, _ = write_counts(tmp_path / "train", COUNTS)
    a = make_dataloader(index, 2, 0, 1, 0, shuffle=True, seed=11)
    b = make_dataloader(index, 2, 0, 1, 0, shuffle=True, seed=11)
    ka0, kb0 = epoch_keys(a)[1], epoch_keys(b)[1]
    assert ka0 == kb0
    ka1 = epoch_keys(a)[1]
    assert ka1 != ka0  # epoch 1 differs from epoch 0
    c = make_dataloader(index, 2, 0, 1, 0, shuffle=True, seed=11)
    c.sampler.set_epoch(1)  # what Lightning calls before each epoch (also after a resume)
    assert epoch_keys(c)[1] == ka1
    plain = epoch_keys(make_dataloader(index, 2, 0, 1, 0, shuffle=False, seed=11))[1]
    assert plain == [f"k{i:03d}" for i in range(22)]
    assert epoch_keys(make_dataloader(index, 2, 0, 1, 0, shuffle=False, seed=1, epoch_batches=15))[1][-1] == "k006"


def test_too_few_shards_or_samples_is_a_shard_error(tmp_path):
    index, _ = write_counts(tmp_path / "train", COUNTS)
    with pytest.raises(ShardError, match=r"5 shard\(s\), but world size 2 x 3 dataloader worker\(s\) = 6"):
        check_shards_for_ranks(index, 2, 3)
    with pytest.raises(ShardError, match="shards.min_shards>=6"):
        make_dataloader(index, 2, 0, 2, 3, shuffle=True, seed=0)
    with pytest.raises(ShardError, match="too few"):
        make_dataloader(index, 16, 0, 2, 1, shuffle=True, seed=0)
    with pytest.raises(ShardError, match="cannot read shard index"):
        make_dataloader(tmp_path / "none.json", 2, 0, 1, 0, shuffle=False, seed=0)


def test_corrupt_shards_are_counted_and_logged_and_batches_stay_exact(tmp_path, caplog):
    index, _ = write_counts(tmp_path / "train", COUNTS)
    folder = index.parent
    truncated = folder / "shard-000000.tar"  # 7 samples; cut inside the 3rd sample
    truncated.write_bytes(truncated.read_bytes()[:2 * 3 * 512 + 5000])
    garbage = folder / "shard-000002.tar"  # replace one sample's FLAC bytes
    data = garbage.read_bytes()
    start = data.index(b"fLaC")
    garbage.write_bytes(data[:start] + b"X" * 4 + data[start + 4:])
    with caplog.at_level(logging.WARNING, logger="seqflow.shards.reader"):
        got = list(iter_samples(index))
    assert len(got) < 23 and len(got) >= 23 - 7 - 1
    assert "shard-000000.tar: skipped" in caplog.text and "shard-000002.tar: skipped 1 of 5" in caplog.text
    assert "unreadable" in caplog.text
    with pytest.raises(ShardError, match="shard-000000.tar"):
        list(iter_samples(index, strict=True))
    dl = make_dataloader(index, 2, 0, 2, 1, shuffle=True, seed=0)
    assert len(list(dl)) == len(dl) == 5


def test_iter_samples_returns_every_sample_in_order(tmp_path):
    index, originals = write_counts(tmp_path / "test", COUNTS, fmt="wav")
    got = list(iter_samples(index))
    assert [k for k, _, _ in got] == sorted(originals)
    for key, wav, meta in got:
        assert wav.dtype == np.float32 and np.allclose(wav, originals[key][0], atol=1e-4)
        assert meta["segments"] == originals[key][1] and meta["text"] == "t" + str(int(key[1:]))
        assert meta["sample_rate"] == SR
