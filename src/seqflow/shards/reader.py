"""WebDataset reader: disjoint shards per rank and dataloader worker, equal batches per rank.

Rank ``r`` of ``W`` reads ``shards[r::W]``; dataloader worker ``w`` of ``N`` reads that part's
``[w::N]``. Every rank yields exactly ``batches_per_rank`` batches per epoch, computed from
``index.json`` as ``floor(num_samples / (W * batch_size))`` rounded down to a multiple of ``N``;
a worker that runs out of samples starts its shards again (so uneven shards never leave one
DDP rank waiting for another, which hangs silently). Samples that cannot be read or decoded
are counted and logged per shard, never dropped silently.

Speech recognition: with ``batch_seconds`` the batches are dynamic, by padded audio seconds
with duration buckets (:mod:`seqflow.shards.bucketing`), ``batches_per_rank`` then comes from the
split's total seconds; with ``tokenizer_dir`` every batch also carries the token ids of its
transcripts (``tokens``, ``token_lengths``); with ``augment`` (train split only) every utterance
passes through :class:`~seqflow.shards.utterance_augment.UtteranceAugment` before bucketing (so
buckets and ``batch_seconds`` see the augmented durations) and batches carry ``augment_counts``.

>>> dl = make_dataloader("shards/x/train/index.json", 16, rank=0, world_size=2,
...                      num_workers=1, shuffle=True, seed=0)            # doctest: +SKIP
>>> batch = next(iter(dl)); batch["audio"].shape, len(dl)                # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import json
import logging
import random
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from seqflow.audio.io import decode_audio_bytes
from seqflow.errors import AudioDecodeError, ShardError
from seqflow.shards.bucketing import bucket_batches, bucket_boundaries, seconds_batches_per_rank
from seqflow.shards.index import duration_percentiles, load_index

if TYPE_CHECKING:
    from seqflow.shards.utterance_augment import UtteranceAugment

log = logging.getLogger(__name__)
AUDIO_KEYS = ("flac", "wav")


def check_shards_for_ranks(index: str | Path | dict, world_size: int, num_workers: int) -> None:
    """Pre-flight: every rank x dataloader worker needs at least one shard of its own.

    Raises:
        ShardError: ``len(shards) < world_size * max(1, num_workers)``, naming the index and the fix.
    """
    data, folder = load_index(index)
    need, have = world_size * max(1, num_workers), len(data.get("shards", []))
    if have < need:
        where = index if not isinstance(index, dict) else f"split {data.get('split')!r}"
        raise ShardError(f"{where}: {have} shard(s), but world size {world_size} x {max(1, num_workers)} "
                         f"dataloader worker(s) = {need} readers each need a shard; re-shard with "
                         f"shards.min_shards>={need} or use fewer ranks/workers")


class _Skips:
    """Exception handler for webdataset that records why samples were lost."""

    def __init__(self) -> None:
        self.reasons: list[str] = []

    def __call__(self, exn: Exception) -> bool:
        self.reasons.append(f"{type(exn).__name__}: {str(exn.args[0] if exn.args else exn)[:160]}")
        return True


def _decode(sample: dict, shard: str) -> dict:
    name = f"{shard}:{sample.get('__key__')}"
    audio_key = next((k for k in AUDIO_KEYS if k in sample), None)
    if audio_key is None or "json" not in sample:
        raise AudioDecodeError(name, "incomplete", f"members {sorted(k for k in sample if not k.startswith('__'))}")
    wav, sr = decode_audio_bytes(sample[audio_key], name=name)
    try:
        meta = json.loads(sample["json"])
    except ValueError as exc:
        raise AudioDecodeError(name, "bad_json", str(exc)[:160]) from exc
    meta.setdefault("sample_rate", sr)
    text = sample["txt"].decode("utf-8") if "txt" in sample else ""
    return {"key": sample["__key__"], "wav": wav, "meta": meta, "text": text}


def read_shard(path: Path, expected: int | None = None, strict: bool = False,
               on_lost: Callable[[int], None] | None = None) -> Iterator[dict]:
    """Decoded samples ``{"key", "wav" (S,), "meta", "text"}`` of one tar, in order.

    Unreadable members and undecodable samples are skipped; the number lost (``expected`` minus
    read, at least the decode failures) is logged as a warning with the first reasons and, once
    the tar has been read to its end, passed to ``on_lost`` (when not 0).

    Raises:
        ShardError: with ``strict``, at the first lost sample.
    """
    skips = _Skips()
    good = 0
    for raw in wds.tarfile_samples(iter([{"url": str(path)}]), handler=skips):
        try:
            sample = _decode(raw, path.name)
        except AudioDecodeError as exc:
            skips(exc)
        else:
            good += 1
            yield sample
        if strict and skips.reasons:
            raise ShardError(f"{path}: {skips.reasons[0]}")
    lost = max(len(skips.reasons) if expected is None else expected - good, 0)
    if strict and lost:
        raise ShardError(f"{path}: {lost} sample(s) missing ({'; '.join(skips.reasons[:2]) or 'truncated'})")
    if lost and on_lost is not None:
        on_lost(lost)
    if lost or skips.reasons:
        log.warning("shard %s: skipped %d of %s samples (%s)", path, lost, expected if expected is not None else "?",
                    "; ".join(skips.reasons[:3]) or "fewer samples than index.json says")


def token_ids(sample: dict, tokenizer=None) -> list[int] | None:
    """A reader sample's token ids: ``meta["tokens"]`` (stored at shard time), else the transcript
    encoded by ``tokenizer`` (older shards), else ``None``."""
    if "tokens" in sample["meta"]:
        return sample["meta"]["tokens"]
    return None if tokenizer is None else tokenizer.encode(sample["text"])


def collate(samples: list[dict], tokenizer=None) -> dict:
    """Batch dict: ``audio`` float32 (B, S) zero-padded, ``audio_lengths`` int64 (B,), ``keys`` and
    ``texts`` lists; ``positive_ends``: per clip the end times [s] of its positive segments
    (``meta["segments"]`` of kind ``positive``), a list of B float lists (trigger word: always
    without a ``tokenizer``, else only when the samples carry segments; per-step labels are derived
    from it by the LightningModule, :func:`seqflow.shards.labels.batch_labels`); with a ``tokenizer``
    also ``tokens`` int64 (B, U) padded with the blank id 0 and ``token_lengths`` int64 (B,); when the
    samples were augmented, ``augment_counts`` (their summed counts, ``{name: int}``)."""
    lengths = [len(s["wav"]) for s in samples]
    audio = np.zeros((len(samples), max(lengths)), dtype=np.float32)
    for i, s in enumerate(samples):
        audio[i, :lengths[i]] = s["wav"]
    batch = {"audio": torch.from_numpy(audio), "audio_lengths": torch.tensor(lengths, dtype=torch.int64),
             "keys": [s["key"] for s in samples], "texts": [s["text"] for s in samples]}
    if tokenizer is None or any("segments" in s["meta"] for s in samples):
        batch["positive_ends"] = [[float(g["end"]) for g in s["meta"].get("segments", ())
                                   if g.get("kind") == "positive"] for s in samples]
    if tokenizer is not None:
        # token ids were computed once at shard time; older shards without them are encoded here
        ids = [token_ids(s, tokenizer) for s in samples]
        tokens = torch.full((len(ids), max(1, max(len(x) for x in ids))), tokenizer.blank_id, dtype=torch.int64)
        for i, x in enumerate(ids):
            tokens[i, :len(x)] = torch.tensor(x, dtype=torch.int64)
        batch["tokens"], batch["token_lengths"] = tokens, torch.tensor([len(x) for x in ids], dtype=torch.int64)
    if any("augment" in s for s in samples):  # UtteranceAugment's per-sample counts
        batch["augment_counts"] = dict(sum((Counter(s.get("augment", {})) for s in samples), Counter()))
    return batch


class ShardBatches(IterableDataset):
    """Batches of one rank: its shards split by dataloader worker, cycled, exactly
    ``batches_per_rank`` batches per epoch (``len()``): ``batch_size`` samples each, or with
    ``batch_seconds`` dynamic duration-bucketed batches (edges ``boundaries`` [s]); token ids
    added by the tokenizer in ``tokenizer_dir`` (loaded in each worker); ``augment``: the train
    split's per-utterance augmentation (seeded by seed, epoch, rank and sample key). A batch
    carries ``lost_samples`` (int) when samples of this worker's shards were lost (unreadable or
    undecodable, :func:`read_shard`) since its previous batch; every pass over a damaged shard
    counts again.

    Raises:
        ShardError: ``augment`` on an index whose split is not ``train``.
    """

    def __init__(self, index_path: str | Path, batch_size: int, rank: int, world_size: int,
                 batches_per_rank: int, shuffle: bool, seed: int, shuffle_buffer: int = 100,
                 batch_seconds: float | None = None, boundaries: list[float] | None = None,
                 tokenizer_dir: str | Path | None = None, augment: UtteranceAugment | None = None) -> None:
        index, folder = load_index(index_path)
        if augment is not None and index.get("split", "train") != "train":
            raise ShardError(f"{index_path}: waveform augmentation is for the train split only, "
                             f"not {index.get('split')!r}")
        self.shards = [(folder / e["name"], int(e["num_samples"])) for e in index["shards"]][rank::world_size]
        self.batch_size, self.rank, self.batches_per_rank = batch_size, rank, batches_per_rank
        self.shuffle, self.seed, self.shuffle_buffer, self.epoch = shuffle, seed, shuffle_buffer, 0
        self.batch_seconds, self.boundaries = batch_seconds, list(boundaries or [])
        self.tokenizer_dir = None if tokenizer_dir is None else str(tokenizer_dir)
        self.augment = augment

    def __len__(self) -> int:
        return self.batches_per_rank

    def _cycle(self, shards: list, rng: random.Random, who: str, on_lost: Callable[[int], None]) -> Iterator[dict]:
        while True:
            order = list(shards)
            if self.shuffle:
                rng.shuffle(order)
            got = 0
            for path, expected in order:
                for sample in read_shard(path, expected, on_lost=on_lost):
                    got += 1
                    yield sample
            if got == 0:
                raise ShardError(f"{who}: no readable sample in {[str(p) for p, _ in shards]}")

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        shards = self.shards[wid::nw]
        who = f"rank {self.rank} worker {wid}"
        if not shards:
            raise ShardError(f"{who}: no shard assigned (run check_shards_for_ranks first)")
        rng = random.Random(f"{self.seed}-{self.rank}-{wid}-{self.epoch}")
        lost = [0]  # samples lost since the last batch (this worker)
        stream = self._cycle(shards, rng, who, lambda n: lost.__setitem__(0, lost[0] + n))
        if self.shuffle:
            stream = wds.filters.shuffle(self.shuffle_buffer, min(self.shuffle_buffer, 32), rng=rng)(stream)
        tokenizer = None
        if self.tokenizer_dir is not None:
            from seqflow.text.tokenizers import load_tokenizer
            tokenizer = load_tokenizer(self.tokenizer_dir)
        if self.augment is not None:
            stream = self.augment.stream(stream, self.epoch, self.rank, lambda s: token_ids(s, tokenizer))
        stream = iter(stream)
        if self.batch_seconds is not None:
            groups = bucket_batches(stream, self.boundaries, float(self.batch_seconds))
        else:
            groups = ([next(stream) for _ in range(self.batch_size)] for _ in itertools.count())
        try:
            for _ in range(self.batches_per_rank // nw):
                batch = collate(next(groups), tokenizer)
                if lost[0]:
                    batch["lost_samples"], lost[0] = lost[0], 0
                yield batch
        finally:
            for it in (groups, stream):
                close = getattr(it, "close", None)
                if close is not None:
                    close()


class ShardLoader(DataLoader):
    """A ``DataLoader`` that tells its dataset the epoch (new shuffle order every epoch).

    The epoch counts iterations; ``set_epoch`` (also reachable as ``loader.sampler.set_epoch``,
    which Lightning calls before every epoch, so a resumed run gets the right order) sets it.
    """

    _epoch = 0

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sampler.set_epoch = self.set_epoch  # Lightning's _set_sampler_epoch looks here

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration use shuffle order ``epoch``."""
        self._epoch = int(epoch)

    def __iter__(self):
        self.dataset.epoch = self._epoch  # copied into the worker processes created below
        self._epoch += 1
        return super().__iter__()


def batches_per_rank(num_samples: int, batch_size: int, world_size: int, num_workers: int) -> int:
    """``floor(num_samples / (world_size * batch_size))`` rounded down to a multiple of ``max(1, num_workers)``."""
    nw = max(1, num_workers)
    return (num_samples // (world_size * batch_size)) // nw * nw


def make_dataloader(index_path: str | Path, batch_size: int, rank: int, world_size: int, num_workers: int,
                    shuffle: bool, seed: int, epoch_batches: int | None = None, shuffle_buffer: int = 100,
                    pin_memory: bool = False, batch_seconds: float | None = None, num_buckets: int = 8,
                    batch_margin: float = 0.1, tokenizer_dir: str | Path | None = None,
                    augment: UtteranceAugment | None = None) -> ShardLoader:
    """DataLoader of one rank over a split's shards (see module doc); yields the batch dicts of
    :func:`collate` (plus ``lost_samples`` after damaged shards, see :class:`ShardBatches`),
    ``len()`` batches per epoch, the same number on every rank.

    Args:
        index_path: the split's ``index.json``.
        batch_size: samples per batch (ignored with ``batch_seconds``).
        rank / world_size: this DDP rank and the number of ranks (passed explicitly).
        num_workers: dataloader worker processes (0: read in this process).
        shuffle: shuffle shard order and samples (buffer of ``shuffle_buffer``) anew each epoch.
        epoch_batches: batches per epoch instead of one pass over the data (rounded down to a
            multiple of ``num_workers``).
        batch_seconds: dynamic batches of at most this many padded seconds of audio, from
            ``num_buckets`` duration buckets; batches per rank from the split's seconds with a
            safety ``batch_margin`` (:func:`~seqflow.shards.bucketing.seconds_batches_per_rank`).
        tokenizer_dir: a saved tokenizer; batches then carry ``tokens`` / ``token_lengths``.
        augment: per-utterance waveform augmentation (train split only; its RIRs and noises are
            loaded already and shared by the worker processes); ``None``: audio as in the shards.

    Raises:
        ShardError: unreadable index, fewer shards than ranks x workers, too few samples for
            one batch per rank and worker, or ``augment`` on a split other than ``train``.
    """
    index, _ = load_index(index_path)
    check_shards_for_ranks(index_path, world_size, num_workers)
    nw = max(1, num_workers)
    boundaries = None
    if epoch_batches is not None:
        n = int(epoch_batches) // nw * nw
    elif batch_seconds is not None:
        n = seconds_batches_per_rank(float(index["num_seconds"]), float(batch_seconds), world_size, num_workers,
                                     batch_margin)
    else:
        n = batches_per_rank(int(index["num_samples"]), batch_size, world_size, num_workers)
    if n <= 0:
        raise ShardError(f"{index_path}: {index['num_samples']} samples are too few for world size {world_size} "
                         f"x batch size {batch_size} x {nw} worker(s) (epoch_batches={epoch_batches})")
    if batch_seconds is not None:
        pct = index.get("duration_percentiles") or duration_percentiles(
            [len(wav) / meta["sample_rate"] for _, wav, meta in iter_samples(index_path)])  # older index
        boundaries = bucket_boundaries(pct, int(num_buckets))
    dataset = ShardBatches(index_path, batch_size, rank, world_size, n, shuffle, seed, shuffle_buffer,
                           batch_seconds=batch_seconds, boundaries=boundaries, tokenizer_dir=tokenizer_dir,
                           augment=augment)
    return ShardLoader(dataset, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
                       persistent_workers=False)


def iter_samples(index_path: str | Path, strict: bool = False) -> Iterator[tuple[str, np.ndarray, dict]]:
    """All samples of a split in shard order, decoded in this process: ``(key, wav (S,) float32, meta)``;
    ``meta`` is the sample's JSON plus ``text`` (its transcript). Lost samples are logged, or with
    ``strict`` raise :class:`ShardError`."""
    index, folder = load_index(index_path)
    for e in index["shards"]:
        for s in read_shard(folder / e["name"], int(e["num_samples"]), strict=strict):
            s["meta"].setdefault("text", s["text"])
            yield s["key"], s["wav"], s["meta"]
