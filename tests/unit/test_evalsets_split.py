"""dev/eval halves of the evaluation sets: deterministic, about half, speaker-disjoint."""

from __future__ import annotations

import os
import subprocess
import sys
import zlib

import pytest

from seqflow.evalsets.splits import SPLITS, assign_splits, balanced_group_splits, hash_split


def test_hash_split_is_crc32_parity_and_about_half():
    keys = [f"pkg/usr/share/sounds/file{i:05d}" for i in range(4000)]
    halves = [hash_split(k) for k in keys]
    assert halves == [SPLITS[zlib.crc32(k.encode()) % 2] for k in keys]
    share = halves.count("dev") / len(keys)
    assert 0.46 < share < 0.54, share


def test_hash_split_does_not_depend_on_python_hash_seed():
    code = "from seqflow.evalsets.splits import hash_split; print(','.join(hash_split(f'k{i}') for i in range(64)))"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2", "random")}
    assert len(outs) == 1
    assert outs.pop().strip() == ",".join(hash_split(f"k{i}") for i in range(64))


def test_balanced_groups_split_few_heavy_speakers_evenly():
    weights = {"cs/small-fish": 2210.0, "cs/big-fish": 2300.0, "nl/small-fish": 2290.0, "nl/big-fish": 2480.0,
               "fr/June": 1500.0, "it/Carlo": 1370.0, **{f"cs/level{i}-x": 30.0 + i for i in range(40)}}
    out = balanced_group_splits(weights)
    assert set(out) == set(weights) and set(out.values()) == set(SPLITS)
    tot = {s: sum(w for g, w in weights.items() if out[g] == s) for s in SPLITS}
    assert abs(tot["dev"] - tot["eval"]) <= max(weights.values())
    assert abs(tot["dev"] - tot["eval"]) / sum(weights.values()) < 0.02  # small groups fill the gap
    # the result depends on the content only, not on the dict's order
    assert balanced_group_splits(dict(reversed(list(weights.items())))) == out


def test_balanced_groups_single_group_and_ties_are_deterministic():
    assert balanced_group_splits({"only": 5.0}) == {"only": hash_split("only")}
    eq = {f"s{i}": 1.0 for i in range(10)}
    a, b = balanced_group_splits(eq), balanced_group_splits(eq)
    assert a == b and list(a.values()).count("dev") == 5


def test_assign_splits_keeps_speakers_together_and_hashes_the_rest():
    keys = [f"f{i}" for i in range(12)]
    speakers = ["a", "a", "b", "b", "c", "c", None, None, None, None, "a", "b"]
    weights = [1.0] * 12
    out = assign_splits(keys, speakers, weights)
    for spk in "abc":
        assert len({s for s, k in zip(out, speakers) if k == spk}) == 1
    unknown = [k for k, s in zip(keys, speakers) if s is None]
    assert [s for s, k in zip(out, speakers) if k is None] == [hash_split(k) for k in unknown]
    assert assign_splits(keys, speakers, weights) == out


def test_assign_splits_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="lengths differ"):
        assign_splits(["a", "b"], ["x"], [1.0, 2.0])
