"""The test-set identity the gate compares on: content, not how the shards were cut."""

from __future__ import annotations

import pytest

from seqflow.config import load_config
from seqflow.evaluate.sets import split_content_hash
from seqflow.shards.reader import iter_samples
from seqflow.shards.writer import shard_dataset
from seqflow.train.launcher import select_best


def _cfg(tmp_path, *extra):
    return load_config([f"shards.root={tmp_path}/shards", f"data.root={tmp_path}/data", "clips.duration=2.0",
                        "clips.train_clips=8", "clips.val_clips=4", "clips.test_clips=6", "shards.min_shards=2",
                        "ray.num_workers=2", "trainer.num_workers=1", *extra])


def test_more_train_clips_or_ranks_keep_the_test_set_identity(tmp_path):
    from test_shards_clips import make_corpus

    (tmp_path / "data").mkdir()
    make_corpus(tmp_path / "data")
    ids = []
    for extra in ([], ["clips.train_clips=12"], ["ray.num_workers=3", "shards.target_bytes=50000"]):
        s = shard_dataset(_cfg(tmp_path, *extra), tmp_path / "data", "md5x", progress=False)
        ids.append((s.root, split_content_hash(list(iter_samples(s.index_paths["test"])))))
    assert len({root for root, _ in ids}) == 3  # three different shard sets ...
    assert len({h for _, h in ids}) == 1        # ... holding the same test split
    s = shard_dataset(_cfg(tmp_path, "clips.test_clips=4"), tmp_path / "data", "md5x", progress=False)
    assert split_content_hash(list(iter_samples(s.index_paths["test"]))) != ids[0][1]


def test_select_best_checkpoint_not_last():
    ckpts = [("e0", {"val/loss": 0.9, "epoch": 0}), ("e1", {"val/loss": 0.4, "epoch": 1}),
             ("e2", {"val/loss": 0.6, "epoch": 2})]
    assert select_best(ckpts, "val/loss", "min") == ("e1", {"val/loss": 0.4, "epoch": 1})
    assert select_best(ckpts, "val/loss", "max")[0] == "e0"
    assert select_best([("a", {"val/cer": 0.5}), ("b", {"val/cer": 0.5})], "val/cer", "min")[0] == "b"
    assert select_best(ckpts, "val/f1", "max") is None


@pytest.mark.parametrize("word,expected", [("activate", "activate"), ("Hey Jarvis!", "hey-jarvis"),
                                           ("привет", "привет"), ("!!!", "x")])
def test_one_registered_model_per_trigger_phrase(word, expected):
    from seqflow.config import slug

    assert slug(word) == expected
    cfg = load_config([f"data.trigger_word='{word}'"])
    assert cfg.model.registered_name == f"seqflow-trigger-word-emb-{expected}"  # the default model
    cfg = load_config([f"data.trigger_word='{word}'", "model=trigger_word"])
    assert cfg.model.registered_name == f"seqflow-trigger-word-{expected}"
