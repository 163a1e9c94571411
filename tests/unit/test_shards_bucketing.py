"""Dynamic batching by audio seconds with duration buckets; equal batch counts per rank."""

import json

import numpy as np
import pytest

from seqflow.errors import ShardError
from seqflow.shards.bucketing import bucket_batches, bucket_boundaries, bucket_of, seconds_batches_per_rank
from seqflow.shards.index import duration_percentiles
from seqflow.shards.reader import make_dataloader
from seqflow.shards.writer import write_shards
from seqflow.text.tokenizers import build_tokenizer

SR = 16000
WORDS = "turn on the lights set a timer play music good morning hello world open door".split()


def utterances(n=45, seed=0):
    """Real samples: 0.3-6 s noise, a few 9 s ones (longer than the test's batch_seconds of 8 s)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        sec = 9.0 if i % 15 == 7 else float(np.round(rng.uniform(0.3, 6.0), 2))
        text = " ".join(rng.choice(WORDS, size=int(rng.integers(1, 5))))
        out.append({"__key__": f"u{i:03d}", "audio": (0.05 * rng.standard_normal(int(sec * SR))).astype(np.float32),
                    "sample_rate": SR, "txt": text, "json": {"duration": sec}})
    return out


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """5 shards (odd, so the two ranks hold different seconds) of 45 utterances, and a char tokenizer."""
    root = tmp_path_factory.mktemp("bucketing")
    samples = utterances()
    index = write_shards(iter(samples), root / "train", "train", target_bytes=10**9, min_shards=5, progress=False)
    tok_dir = root / "tokenizer"
    build_tokenizer("char", [s["txt"] for s in samples], out_dir=tok_dir)
    return root / "train" / "index.json", index, tok_dir, {s["__key__"]: s for s in samples}


def test_bucket_boundaries_cut_equal_counts_and_bucket_of_follows_them():
    durations = np.random.default_rng(1).uniform(0.5, 20.0, 4000)
    edges = bucket_boundaries(duration_percentiles(durations), 4)
    assert len(edges) == 3 and edges == sorted(edges)
    counts = np.bincount([bucket_of(d, edges) for d in durations], minlength=4)
    assert counts.min() > 0.23 * len(durations)
    assert bucket_boundaries(duration_percentiles([2.0] * 10), 8) == [2.0]  # equal durations: edges collapse
    assert bucket_boundaries([], 8) == [] and bucket_boundaries([1.0, 2.0], 1) == []
    assert [bucket_of(x, [1.0, 2.0]) for x in (0.5, 1.0, 1.5, 2.5)] == [0, 1, 1, 2]


def test_bucket_batches_bound_padded_seconds_and_keep_long_utterances_alone():
    rng = np.random.default_rng(2)
    durations = list(np.round(rng.uniform(0.2, 7.0, 500), 3)) + [12.0, 30.0]
    edges = bucket_boundaries(duration_percentiles(durations), 6)
    batches = list(bucket_batches(durations, edges, 10.0, seconds_of=float))
    assert sorted(d for b in batches for d in b) == sorted(durations)  # finite stream: everything comes out
    for b in batches:
        assert len(b) * max(b) <= 10.0 or len(b) == 1
        assert len({bucket_of(d, edges) for d in b}) == 1
    assert [b for b in batches if max(b) > 10.0] == [[12.0], [30.0]]
    full = [b for b in batches if len(b) > 1]
    assert np.mean([len(b) * max(b) for b in full]) > 6.0  # buckets keep padding low
    with pytest.raises(ShardError, match="batch_seconds must be > 0"):
        next(bucket_batches(durations, edges, 0.0, seconds_of=float))


def test_seconds_batches_per_rank_is_floored_rounded_to_workers_and_positive():
    assert seconds_batches_per_rank(1000.0, 60.0, 2, 1, margin=0.1) == 7  # floor(900 / 120)
    assert seconds_batches_per_rank(1000.0, 60.0, 2, 2, margin=0.1) == 6
    assert seconds_batches_per_rank(1000.0, 60.0, 2, 3, margin=0.0) == 6  # floor(8.33) = 8 -> 6
    assert seconds_batches_per_rank(10.0, 60.0, 4, 2) == 2  # at least one batch per worker
    with pytest.raises(ShardError):
        seconds_batches_per_rank(10.0, 60.0, 2, 1, margin=1.0)


@pytest.mark.parametrize("num_workers", [1, 2])
def test_every_rank_yields_the_same_number_of_bounded_bucketed_batches(split, num_workers):
    index_path, index, tok_dir, originals = split
    assert len(index["shards"]) == 5
    per_shard = [set() for _ in index["shards"]]
    for e, keys in zip(index["shards"], per_shard):
        start = sum(x["num_samples"] for x in index["shards"][:index["shards"].index(e)])
        keys.update(f"u{i:03d}" for i in range(start, start + e["num_samples"]))
    edges = bucket_boundaries(index["duration_percentiles"], 4)
    batch_seconds, world = 8.0, 2
    expected = seconds_batches_per_rank(index["num_seconds"], batch_seconds, world, num_workers, 0.1)
    seen = []
    for rank in range(world):
        dl = make_dataloader(index_path, 0, rank, world, num_workers, shuffle=True, seed=5,
                             batch_seconds=batch_seconds, num_buckets=4, shuffle_buffer=8, tokenizer_dir=tok_dir)
        assert len(dl) == expected
        keys = set()
        for _epoch in range(2):
            batches = list(dl)
            assert len(batches) == expected
            for b in batches:
                secs = b["audio_lengths"].numpy() / SR
                assert len(secs) * secs.max() <= batch_seconds or len(secs) == 1  # padded seconds bounded
                assert b["audio"].shape == (len(secs), int(b["audio_lengths"].max()))
                assert len({bucket_of(float(d), edges) for d in secs}) == 1  # similar durations
                keys.update(b["keys"])
        assert keys <= set().union(*per_shard[rank::world])  # its own shards only
        seen.append(keys)
    assert not seen[0] & seen[1]


def test_dynamic_batches_carry_tokens_that_decode_to_the_texts(split):
    from seqflow.text.tokenizers import load_tokenizer

    index_path, _, tok_dir, originals = split
    tok = load_tokenizer(tok_dir)
    dl = make_dataloader(index_path, 0, 0, 1, 0, shuffle=False, seed=0, batch_seconds=12.0, num_buckets=3,
                         tokenizer_dir=tok_dir)
    batch = next(iter(dl))
    assert set(batch) == {"audio", "audio_lengths", "keys", "texts", "tokens", "token_lengths"}
    assert batch["tokens"].dtype == batch["token_lengths"].dtype == batch["audio_lengths"].dtype
    assert str(batch["tokens"].dtype) == "torch.int64"
    assert batch["tokens"].shape == (len(batch["keys"]), int(batch["token_lengths"].max()))
    for i, key in enumerate(batch["keys"]):
        n, s = int(batch["token_lengths"][i]), originals[key]
        assert batch["texts"][i] == s["txt"] and tok.decode(batch["tokens"][i, :n].tolist()) == s["txt"]
        assert not batch["tokens"][i, n:].any()  # padded with blank id 0
        assert int(batch["audio_lengths"][i]) == len(s["audio"])


def test_an_index_without_percentiles_still_buckets(split, tmp_path):
    index_path, index, _, _ = split
    old = {k: v for k, v in index.items() if k != "duration_percentiles"}
    folder = tmp_path / "old"
    folder.mkdir()
    for e in index["shards"]:
        (folder / e["name"]).symlink_to(index_path.parent / e["name"])
    (folder / "index.json").write_text(json.dumps(old))
    a = [b["keys"] for b in make_dataloader(folder / "index.json", 0, 0, 1, 0, False, 0, batch_seconds=8.0)]
    b = [b["keys"] for b in make_dataloader(index_path, 0, 0, 1, 0, False, 0, batch_seconds=8.0)]
    assert a == b
