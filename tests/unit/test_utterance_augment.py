"""On-the-fly augmentation of ASR train utterances: speed, CTC feasibility, reproducible draws,
train split only, equal batches per rank, counts logged per epoch, config block."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers.logger import Logger
from torch.utils.data import DataLoader

from seqflow.audio.rooms import RirBank
from seqflow.errors import ShardError
from seqflow.models.ctc import ctc_feasible
from seqflow.shards.index import finish_index
from seqflow.shards.reader import iter_samples, make_dataloader
from seqflow.shards.utterance_augment import COUNT_NAMES, UtteranceAugment, utterance_chain
from seqflow.shards.writer import _encode, _Shards
from seqflow.text.tokenizers import CharTokenizer

SR, HOP = 16000, 160
TEXTS = ["turn on the light", "hello", "set a timer", "go left", "stop", "play some music"]
TOK = CharTokenizer.from_texts(TEXTS)
FULL = {"speed": {"p": 0.5, "factor": [0.9, 1.1]}, "reverb": {"p": 0.5}, "noise": {"p": 0.4, "snr_db": [5, 25]},
        "eq": {"p": 0.3, "bands": 2}, "bandlimit": {"p": 0.2}, "telephone": {"p": 0.1}, "gain": {"p": 1.0}}
BATCHING = dict(batch_seconds=4.0, num_buckets=2, batch_margin=0.1, shuffle_buffer=8)


@pytest.fixture(scope="module")
def bank() -> RirBank:
    return RirBank.build("train", size=3, seed=0, sample_rate=SR,
                         rooms={"rt60": [0.2, 0.4], "dims_max": [5.0, 5.0, 3.0], "image_order": 3})


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Utterance shards (4 tars per split, 1.0-1.6 s of speech-like noise, all CTC-feasible at
    speed 1.1) and the tokenizer dir."""
    root = tmp_path_factory.mktemp("asr")
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        folder = root / split
        folder.mkdir()
        tars, seconds, i = _Shards(folder), [], 0
        for _ in range(4):
            tars.open_next()
            for _ in range(6):
                n = int(SR * rng.uniform(1.0, 1.6))
                wav = (0.1 * rng.standard_normal(n) * np.sin(np.linspace(0, 20, n)) ** 2).astype(np.float32)
                text = TEXTS[i % len(TEXTS)]
                enc, sec = _encode({"__key__": f"{split}-{i:06d}-u", "audio": wav, "sample_rate": SR, "txt": text,
                                    "json": {"duration": n / SR, "tokens": TOK.encode(text)}}, "flac")
                tars.write(enc, sec)
                seconds.append(sec)
                i += 1
        tars.close()
        finish_index(folder, tars.stats, split, "flac", "md5", "hash", seconds)
    TOK.save(root / "tokenizer")
    return root


def _aug(chain, bank=None, seed=7) -> UtteranceAugment:
    noise = (0.05 * np.random.default_rng(9).standard_normal(3 * SR)).astype(np.float32)
    return UtteranceAugment(chain, SR, HOP, seed, rirs=bank, noises=[noise])


def _loader(shards, split="train", rank=0, world=1, workers=0, augment=None):
    return make_dataloader(shards / split / "index.json", 4, rank, world, workers, shuffle=split == "train",
                           seed=3, tokenizer_dir=shards / "tokenizer", augment=augment, **BATCHING)


def _by_key(batches) -> dict[str, np.ndarray]:
    return {k: b["audio"][i, :int(b["audio_lengths"][i])].numpy() for b in batches for i, k in enumerate(b["keys"])}


def test_speed_1_1_shortens_by_1_over_1_1_and_keeps_the_transcript(shards):
    aug = _aug({"speed": {"p": 1.0, "factor": [1.1, 1.1]}})
    wav = (0.1 * np.random.default_rng(0).standard_normal(2 * SR)).astype(np.float32)
    out, counts = aug(wav, TOK.encode("hello"), "k", epoch=0, rank=0)
    assert abs(len(out) - round(len(wav) / 1.1)) <= 1 and counts == {"applied_speed": 1}

    original = {k: (w, m) for k, w, m in iter_samples(shards / "train" / "index.json")}
    batches = list(_loader(shards, augment=aug))
    assert batches and all(b["augment_counts"].get("applied_speed", 0) == len(b["keys"]) for b in batches)
    for b in batches:
        for i, key in enumerate(b["keys"]):
            wav0, meta = original[key]
            assert abs(int(b["audio_lengths"][i]) - round(len(wav0) / 1.1)) <= 1
            assert b["texts"][i] == meta["text"]
            assert b["tokens"][i, :int(b["token_lengths"][i])].tolist() == meta["tokens"] == TOK.encode(meta["text"])


def test_val_loader_is_untouched_and_refuses_augmentation(shards, bank):
    original = {k: w for k, w, _ in iter_samples(shards / "val" / "index.json")}
    got = _by_key(list(_loader(shards, "val")))
    assert got and all(np.array_equal(w, original[k]) for k, w in got.items())  # byte-identical to the shards
    assert all("augment_counts" not in b for b in _loader(shards, "val"))
    with pytest.raises(ShardError, match="train split only"):
        _loader(shards, "val", augment=_aug(FULL, bank))


def test_same_seed_epoch_and_key_give_identical_audio_another_epoch_differs(shards, bank):
    wav = (0.1 * np.random.default_rng(1).standard_normal(SR)).astype(np.float32)
    ids = TOK.encode("go left")
    chain = {k: {**v, "p": 1.0} for k, v in FULL.items() if k != "telephone"}
    a = _aug(chain, bank)(wav, ids, "train-000001-u", epoch=2, rank=1)[0]
    b = _aug(chain, bank)(wav, ids, "train-000001-u", epoch=2, rank=1)[0]
    assert np.array_equal(a, b) and not np.array_equal(a[:len(wav)], wav[:len(a)])
    for other in ({"epoch": 3, "rank": 1, "key": "train-000001-u"}, {"epoch": 2, "rank": 1, "key": "train-000002-u"}):
        c = _aug(chain, bank)(wav, ids, **other)[0]
        assert len(c) != len(a) or not np.array_equal(c, a)

    def epoch(dl, e):
        dl.set_epoch(e)
        return _by_key(list(dl))

    aug = _aug(FULL, bank)
    first, again = epoch(_loader(shards, augment=aug), 0), epoch(_loader(shards, augment=_aug(FULL, bank)), 0)
    assert first.keys() == again.keys() and all(np.array_equal(first[k], again[k]) for k in first)
    later = epoch(_loader(shards, augment=aug), 1)
    common = set(first) & set(later)
    assert common and any(len(first[k]) != len(later[k]) or not np.array_equal(first[k], later[k]) for k in common)


def test_a_ctc_infeasible_speed_up_is_not_applied():
    ids = TOK.encode("set a timer")  # no adjacent repeats: 11 frames needed
    n = next(m for m in range(HOP, 10 * SR, HOP // 4) if ctc_feasible(m, ids, HOP))  # shortest feasible length
    wav = (0.1 * np.random.default_rng(2).standard_normal(n)).astype(np.float32)
    up = _aug({"speed": {"p": 1.0, "factor": [1.1, 1.1]}, "gain": {"p": 1.0}})
    out, counts = up(wav, ids, "k", epoch=0, rank=0)
    assert len(out) == n and counts == {"speed_infeasible": 1, "applied_gain": 1}
    down = _aug({"speed": {"p": 1.0, "factor": [0.9, 0.9]}})
    out, counts = down(wav, ids, "k", epoch=0, rank=0)
    assert abs(len(out) - round(n / 0.9)) <= 1 and counts == {"applied_speed": 1}


def test_silent_output_is_skipped_and_counted():
    aug = _aug({"eq": {"p": 1.0}, "gain": {"p": 1.0, "dbfs": [-200, -200]}})
    wav = (0.1 * np.random.default_rng(3).standard_normal(SR)).astype(np.float32)
    out, counts = aug(wav, None, "k", epoch=0, rank=0)
    assert counts == {"applied_eq": 1, "skipped_gain": 1} and np.isfinite(out).all() and np.abs(out).max() > 1e-3


@pytest.mark.parametrize("workers", [0, 1])
def test_equal_batches_per_rank_and_padded_seconds_stay_bounded(shards, bank, workers):
    aug = _aug({**FULL, "speed": {"p": 1.0, "factor": [0.9, 1.1]}}, bank)
    counts = []
    for rank in (0, 1):
        dl = _loader(shards, rank=rank, world=2, workers=workers, augment=aug)
        batches = list(dl)
        counts.append(len(batches))
        assert len(batches) == len(dl)
        for b in batches:  # augmented before bucketing: the limit holds for the actual durations
            padded = len(b["keys"]) * int(b["audio_lengths"].max())
            assert padded <= BATCHING["batch_seconds"] * SR or len(b["keys"]) == 1
            assert set(b["augment_counts"]) <= set(COUNT_NAMES)
    assert counts[0] == counts[1] > 0


class _Metrics(Logger):
    def __init__(self) -> None:
        super().__init__()
        self.metrics: dict[str, float] = {}

    name, version = "m", 0

    def log_metrics(self, metrics, step=None) -> None:
        self.metrics.update(metrics)

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass


def test_counts_are_logged_once_per_epoch():
    from seqflow.lit.asr import CTCModule
    from seqflow.models.ctc import CTCModel

    features = {"sample_rate": SR, "n_fft": 512, "win_length": 400, "hop_length": HOP, "n_mels": 40}
    torch.manual_seed(0)
    module = CTCModule(CTCModel(40, TOK.vocab_size, d_model=32, num_heads=2, num_layers=1, d_ff=64), TOK, features)
    ids = TOK.encode("hello")
    batch = {"audio": 0.1 * torch.randn(2, SR), "audio_lengths": torch.tensor([SR, SR]), "keys": ["a", "b"],
             "texts": ["hello"] * 2, "tokens": torch.tensor([ids, ids]), "token_lengths": torch.tensor([5, 5]),
             "augment_counts": {"applied_speed": 1, "skipped_noise": 2}}
    logger = _Metrics()
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=1, logger=logger, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, DataLoader([batch, batch], batch_size=None))
    assert logger.metrics["augment/applied_speed"] == 2.0 and logger.metrics["augment/skipped_noise"] == 4.0


def test_config_block_builds_the_chain_and_is_recorded_as_params():
    from seqflow.config import load_config
    from seqflow.tracking.runs import flatten_params

    cfg = load_config(["model=ctc"])
    chain = utterance_chain(cfg.augment)
    assert chain["speed"] == {"p": 0.5, "factor": [0.9, 1.1]} and chain["gain"]["p"] == 1.0
    assert {"augment.utterances.speed.p", "augment.utterances.noise.snr_db"} <= set(flatten_params(cfg))
    assert utterance_chain(load_config(["model=ctc", "augment.utterances.enabled=false"]).augment) is None
    assert utterance_chain(load_config(["model=ctc", "augment.enabled=false"]).augment) is None
