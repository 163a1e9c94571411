"""Deterministic dev/eval halves of an evaluation set.

Every evaluation set is cut into ``dev`` (thresholds and choices may look at it) and ``eval``
(reported numbers only). The cut never depends on run order, machine or Python's salted
``hash()``:

* rows whose **speaker is known** (a fillets character, an asterisk voice) are kept together:
  speakers are dealt, heaviest first, to whichever half has fewer seconds so far, so the halves
  are speaker-disjoint and near 50/50 in duration even with a few dominant speakers (a plain hash
  of 4 speakers would often put 3 of them in one half);
* rows **without a known speaker** go by ``crc32(key) % 2`` of their own key (file), which is
  about half by count and stable when files are added or removed.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence

SPLITS = ("dev", "eval")


def hash_split(key: str) -> str:
    """``dev`` or ``eval`` by ``zlib.crc32(key) % 2`` (the same rule as ``seqflow.evaluate.sets``)."""
    return SPLITS[zlib.crc32(key.encode("utf-8")) % 2]


def balanced_group_splits(weights: Mapping[str, float]) -> dict[str, str]:
    """Deal groups to the two halves, heaviest first, each to the half lighter so far.

    Args:
        weights: ``{group: weight}``, e.g. seconds of audio per speaker.

    Returns:
        ``{group: "dev" | "eval"}``. Ties (equal weights, equal halves) are broken by
        :func:`hash_split` of the group and its crc32, so the result depends only on the input.
        The two halves differ by at most the largest single weight.
    """
    order = sorted(weights, key=lambda g: (-float(weights[g]), zlib.crc32(g.encode("utf-8")), g))
    total = {s: 0.0 for s in SPLITS}
    out: dict[str, str] = {}
    for g in order:
        if total["dev"] == total["eval"]:
            half = hash_split(g)
        else:
            half = min(SPLITS, key=lambda s: total[s])
        out[g] = half
        total[half] += float(weights[g])
    return out


def assign_splits(keys: Sequence[str], speakers: Sequence[str | None], weights: Sequence[float]) -> list[str]:
    """The half of each row.

    Args:
        keys: a unique key per row (stable across builds, e.g. ``package/relative/path``).
        speakers: the row's speaker when known, else ``None`` (split by its key then).
        weights: the row's duration [s] (used to balance the speaker groups).

    Returns:
        ``"dev"``/``"eval"`` per row, in input order.

    Raises:
        ValueError: the three sequences differ in length.
    """
    if not len(keys) == len(speakers) == len(weights):
        raise ValueError(f"keys/speakers/weights lengths differ: {len(keys)}, {len(speakers)}, {len(weights)}")
    per_speaker: dict[str, float] = {}
    for spk, w in zip(speakers, weights):
        if spk is not None:
            per_speaker[spk] = per_speaker.get(spk, 0.0) + float(w)
    groups = balanced_group_splits(per_speaker)
    return [groups[spk] if spk is not None else hash_split(k) for k, spk in zip(keys, speakers)]
