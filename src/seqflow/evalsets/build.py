"""Fetch, unpack and build every real-audio evaluation set under one root folder.

Layout under ``root`` (``eval-data/`` by default, git-ignored)::

    debs/<package>_<version>_<arch>.deb     apt-get download
    pkgs/<package>/usr/...                  dpkg -x
    <set>/manifest.jsonl, set.json, quarantine.jsonl, audio/*.flac

Everything already there is reused; a second run decodes nothing and touches no network.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from seqflow.evalsets.builders import SETS, Caps, build_set
from seqflow.evalsets.debian import EvalDataUnavailable, extract, fetch_packages

log = logging.getLogger("seqflow.evalsets")


def build_eval_data(root: Path, sets: Sequence[str] | None = None, caps: Caps = Caps(),
                    progress: bool = True, strict: bool = False) -> dict[str, Path]:
    """Build the real-audio evaluation sets (:data:`seqflow.evalsets.builders.SETS`).

    Args:
        root: the eval-data folder.
        sets: set names (default: all).
        caps: per-source limits (default: keep everything).
        progress: tqdm bars while converting.
        strict: re-raise :class:`EvalDataUnavailable` instead of skipping.

    Returns:
        ``{set name: manifest path}``; ``{}`` when the packages cannot be obtained here (no
        apt-get/dpkg, no network): then one line ``eval-data: skipped (<reason>)`` is printed.

    Raises:
        ValueError: an unknown set name.
        EvalDataUnavailable: only with ``strict``.
    """
    names = list(sets) if sets else list(SETS)
    unknown = [n for n in names if n not in SETS]
    if unknown:
        raise ValueError(f"unknown evaluation set(s) {unknown}; known: {sorted(SETS)}")
    root = Path(root)
    packages = list(dict.fromkeys(p for n in names for p in SETS[n].packages))
    try:
        debs = fetch_packages(packages, root / "debs")
        trees = {p: extract(d, root / "pkgs" / p) for p, d in debs.items()}
    except EvalDataUnavailable as e:
        if strict:
            raise
        print(f"eval-data: skipped ({e})", flush=True)
        return {}
    deb_names = {p: d.name for p, d in debs.items()}
    return {n: build_set(n, trees, root / n, deb_names, caps=caps, progress=progress) for n in names}
