"""Dynamic batches by audio seconds with duration buckets, for speech recognition.

Utterances vary from under a second to tens of seconds, so a fixed batch size either wastes
most of a batch on padding or runs out of memory on the long ones. Each dataloader worker instead
sorts its (shuffled) sample stream into ``num_buckets`` duration buckets whose edges cut the
split's durations into equal-count ranges (from ``index.json``'s ``duration_percentiles``); a
bucket is emitted as a batch as soon as adding the next sample would make its **padded** seconds
(``batch size x longest duration``) exceed ``batch_seconds``. So every batch holds at most
``batch_seconds`` of padded audio (a single utterance longer than that comes alone), and its
utterances have similar lengths.

DDP needs the same number of batches on every rank: :func:`seconds_batches_per_rank` fixes it from
``index.json``'s total seconds, and each worker cycles its shards until it has produced its share
(:class:`seqflow.shards.reader.ShardBatches`).

>>> edges = bucket_boundaries([float(p) / 10 for p in range(101)], 4)   # durations 0..10 s
>>> edges, bucket_of(3.0, edges)
([2.5, 5.0, 7.5], 1)
>>> seconds = [1.0, 1.1, 6.0, 1.2, 6.5, 1.0]
>>> list(bucket_batches(seconds, edges, 4.0, seconds_of=float))   # 6 s > 4 s: alone
[[6.0], [6.5], [1.0, 1.1, 1.2], [1.0]]
"""

from __future__ import annotations

import bisect
import math
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from seqflow.errors import ShardError


def bucket_boundaries(percentiles: Sequence[float], num_buckets: int) -> list[float]:
    """Inner bucket edges [s], ascending and distinct (at most ``num_buckets - 1``), that split the
    durations into ``num_buckets`` ranges of about equal sample counts.

    Args:
        percentiles: the 0th..100th percentile of the sample durations (any number >= 2 of evenly
            spaced quantiles, e.g. ``index.json``'s ``duration_percentiles``).
        num_buckets: wanted buckets; 1 (or no percentiles) gives one bucket (no edges).
    """
    if num_buckets <= 1 or len(percentiles) < 2:
        return []
    grid = np.linspace(0.0, 1.0, len(percentiles))
    edges = np.interp(np.arange(1, num_buckets) / num_buckets, grid, np.asarray(percentiles, dtype=np.float64))
    return sorted({round(float(e), 3) for e in edges})


def bucket_of(seconds: float, boundaries: Sequence[float]) -> int:
    """Bucket index (0 .. len(boundaries)) of a duration: the number of edges <= ``seconds``."""
    return bisect.bisect_right(boundaries, seconds)


def sample_seconds(sample: dict) -> float:
    """Duration [s] of a decoded reader sample ``{"wav" (S,), "meta": {"sample_rate"}}``."""
    return len(sample["wav"]) / float(sample["meta"]["sample_rate"])


def bucket_batches(samples: Iterable, boundaries: Sequence[float], batch_seconds: float,
                   seconds_of: Callable[[object], float] = sample_seconds) -> Iterator[list]:
    """Group a stream of samples into batches of similar duration and bounded padded seconds.

    Args:
        samples: any iterable (typically endless: a worker's cycled, shuffled shards).
        boundaries: bucket edges from :func:`bucket_boundaries`.
        batch_seconds: most padded seconds per batch (``len(batch) * max duration``).
        seconds_of: duration of a sample [s].

    Yields:
        Lists of samples, all from one bucket, with ``len * max(duration) <= batch_seconds``; a sample
        longer than ``batch_seconds`` is yielded alone at once. When ``samples`` ends, the partly
        filled buckets are yielded, shortest bucket first.

    Raises:
        ShardError: ``batch_seconds`` is not positive.
    """
    if not batch_seconds > 0:
        raise ShardError(f"batching.batch_seconds must be > 0, got {batch_seconds}")
    buckets: list[list] = [[] for _ in range(len(boundaries) + 1)]
    longest = [0.0] * len(buckets)
    for sample in samples:
        d = float(seconds_of(sample))
        if d > batch_seconds:
            yield [sample]
            continue
        b = bucket_of(d, boundaries)
        if buckets[b] and (len(buckets[b]) + 1) * max(longest[b], d) > batch_seconds:
            yield buckets[b]
            buckets[b], longest[b] = [], 0.0
        buckets[b].append(sample)
        longest[b] = max(longest[b], d)
    for bucket in buckets:
        if bucket:
            yield bucket


def seconds_batches_per_rank(total_seconds: float, batch_seconds: float, world_size: int, num_workers: int,
                             margin: float = 0.1) -> int:
    """Batches every rank yields per epoch under dynamic batching:
    ``floor(total_seconds * (1 - margin) / (world_size * batch_seconds))`` rounded down to a multiple
    of ``max(1, num_workers)``, and at least one batch per worker.

    Batches are never fuller than ``batch_seconds`` (padding, bucket edges), so one pass over a rank's
    data gives at least this many batches on average; ``margin`` leaves room for ranks whose shards
    hold fewer seconds (they start their shards again rather than stop early).
    """
    if not batch_seconds > 0 or world_size < 1 or not 0.0 <= margin < 1.0:
        raise ShardError(f"bad dynamic batching: batch_seconds={batch_seconds}, world_size={world_size}, "
                         f"margin={margin}")
    nw = max(1, num_workers)
    n = math.floor(total_seconds * (1.0 - margin) / (world_size * batch_seconds))
    return max(nw, n // nw * nw)
