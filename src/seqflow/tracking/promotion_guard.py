"""Concurrent registrations of one model: the champion ends on the gate's best version.

:func:`seqflow.tracking.registry.register_and_promote` reads the champion, decides with the gate
and moves the aliases. Two calls at once can interleave those steps so that the worse version
ends up champion. Two remedies, chosen by the registry URI (:func:`choose`):

* **local stores** (``sqlite:///<file>``, ``file:``/plain paths): an inter-process lock per
  registered model (``filelock``, an ``flock``) held around read → decide → set → tag, so
  registrations run one after another. The lock files live in a folder *next to* the store,
  never inside it: ``<store>.seqflow-locks/<model>-<hash>.lock`` (``mlflow.db.seqflow-locks/``
  beside ``mlflow.db``; ``mlruns.seqflow-locks/`` beside ``mlruns/``). Each holds the holder's
  pid, host and start time, named when the wait (``lock_timeout_s``) runs out.
* **servers** (``http(s)://``, ``databricks``, database URIs: no shared file system): no lock.
  Before reading the champion the call remembers which versions were complete (``history``);
  after its own version is complete it **settles** the champion (:func:`settle_champion`):
  it waits (bounded) for the versions registered concurrently to complete, then moves the
  champion to the gate's best of those that passed, re-reading until nothing moves (bounded
  rounds). Only versions registered concurrently are considered, so an older version a person
  demoted by hand is never brought back.

>>> guard = choose(client, "seqflow-trigger-word-activate", "auto", lock_timeout_s=120)
>>> with guard.held():
...     ...                      # read → decide → set aliases → tag the version ready
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import re
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import unquote, urlparse

log = logging.getLogger("seqflow.registry")

MODES = ("auto", "lock", "recheck")
LOCK_DIR_SUFFIX = ".seqflow-locks"
MAX_ROUNDS = 10          # champion moves one settle may make
SETTLE_POLL_S = 0.25     # seconds between re-reads while concurrent versions are in flight
TAG_STATUS = "seqflow.status"
TAG_DECISION = "promotion.decision"
TAG_TEST_SET = "eval.test_set"


class PromotionLockTimeout(Exception):
    """The per-model promotion lock was not free within the wait (the message names the holder)."""


def local_store_path(uri: str | None) -> Path | None:
    """The file or folder a local registry URI stores into, or None for a server or in-memory store.

    >>> local_store_path("sqlite:////srv/p/mlflow.db"), local_store_path("http://h:5000")
    (PosixPath('/srv/p/mlflow.db'), None)
    """
    if not uri:
        return None
    if uri.startswith("sqlite:"):
        path = uri.split("?", 1)[0][len("sqlite:"):]
        if not path.startswith("///"):
            return None  # sqlite:// or sqlite://:memory:
        path = path[3:]
        return None if path in ("", ":memory:") else Path(os.path.realpath(path))
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(os.path.realpath(unquote(parsed.path)))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):
        return Path(os.path.realpath(uri))
    return None


def lock_path(store: Path, name: str) -> Path:
    """``<store>.seqflow-locks/<name, file-safe>-<sha1 of name, 10 hex>.lock``."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:80]
    digest = hashlib.sha1(name.encode()).hexdigest()[:10]
    return store.with_name(store.name + LOCK_DIR_SUFFIX) / f"{safe}-{digest}.lock"


def _write_holder(fd: int) -> None:
    text = (f"pid {os.getpid()} on host {socket.gethostname()} since "
            f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}").encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, text, 0)


@dataclass
class Guard:
    """How one registration is protected: ``lock`` (a file path) or none (``recheck``: settle)."""

    name: str
    lock: Path | None
    lock_timeout_s: float

    @property
    def recheck(self) -> bool:
        return self.lock is None

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold the model's promotion lock (no-op in recheck mode).

        Raises:
            PromotionLockTimeout: not free within ``lock_timeout_s``; names the lock file and holder.
        """
        if self.lock is None:
            yield
            return
        from filelock import FileLock, Timeout

        self.lock.parent.mkdir(parents=True, exist_ok=True)
        flock = FileLock(self.lock, preserve_lock_file=True, on_acquired=_write_holder)
        try:
            flock.acquire(timeout=self.lock_timeout_s, poll_interval=0.05)
        except Timeout:
            try:
                holder = self.lock.read_text().strip() or "an unknown process"
            except OSError:
                holder = "an unknown process"
            raise PromotionLockTimeout(
                f"promotion lock of {self.name!r} ({self.lock}) not free within {self.lock_timeout_s:g} s: held by "
                f"{holder} (another registration of this model; raise lock_timeout_s or wait for it)") from None
        try:
            yield
        finally:
            flock.release()


def choose(client, name: str, mode: str = "auto", lock_timeout_s: float = 120.0) -> Guard:
    """The guard for registering ``name`` through ``client``: ``auto`` locks on a local store
    (:func:`local_store_path` of the registry URI) and settles otherwise; ``lock`` / ``recheck``
    force one (``lock`` on a server store is an error).

    Raises:
        ValueError: unknown ``mode``, ``lock`` without a local store, or ``lock_timeout_s`` < 0.
    """
    if mode not in MODES:
        raise ValueError(f"concurrency={mode!r}: must be one of {', '.join(MODES)}")
    if not lock_timeout_s >= 0:
        raise ValueError(f"lock_timeout_s={lock_timeout_s!r}: must be a number of seconds >= 0")
    uri = getattr(client, "_registry_uri", None)
    if uri is None:
        import mlflow

        uri = mlflow.get_registry_uri()
    store = local_store_path(uri)
    if mode == "lock" and store is None:
        raise ValueError(f"concurrency='lock' needs a local registry store (sqlite:///<file> or file:), "
                         f"not {uri!r}")
    use_lock = store is not None and mode != "recheck"
    return Guard(name=name, lock=lock_path(store, name) if use_lock else None, lock_timeout_s=lock_timeout_s)


_CONFLICT = re.compile(r"UNIQUE constraint|IntegrityError|duplicate key|Duplicate entry", re.IGNORECASE)


def set_alias(client, name: str, alias: str, version: int | str, tries: int = 5) -> None:
    """``client.set_registered_model_alias``, retried when two writers created the alias at the
    same moment (MLflow's SQL stores insert a new alias after a read: the loser gets a unique
    constraint error, also through a server). Other errors propagate at once."""
    for attempt in range(tries):
        try:
            client.set_registered_model_alias(name, alias, str(version))
            return
        except Exception as e:  # noqa: BLE001 - only the conflict is retried
            if attempt == tries - 1 or not _CONFLICT.search(str(e)):
                raise
            time.sleep(0.05 * (attempt + 1))


def _versions(client, name: str) -> list:
    return list(client.search_model_versions(f"name = '{name}'"))


def complete_versions(client, name: str) -> set[int]:
    """Version numbers of ``name`` whose registration finished (tag ``seqflow.status`` set)."""
    return {int(v.version) for v in _versions(client, name) if (v.tags or {}).get(TAG_STATUS)}


def _gate_metric(v, metric_key: str, test_set: str) -> float | None:
    """The gate metric recorded on version ``v`` when it passed the gate (promoted, ready, same
    metric key and test set), else None."""
    tags = v.tags or {}
    if (tags.get(TAG_STATUS) != "ready" or tags.get(TAG_DECISION) != "promoted"
            or tags.get("gate.metric_key") != metric_key or tags.get(TAG_TEST_SET) != test_set):
        return None
    try:
        value = float(tags["gate.metric"])
    except (KeyError, ValueError):
        return None
    return None if math.isnan(value) else value


def settle_champion(client, name: str, version: int, history: set[int], base_version: int | None,
                    metric_key: str, test_set: str, lower_is_better: bool,
                    promotes_over_base: Callable[[float], bool], champion_alias: str = "champion",
                    wait_s: float = 60.0, stale_after_s: float = 360.0) -> int | None:
    """Move ``champion_alias`` to the gate's best version among those registered concurrently
    with ``version`` (not in ``history``, the versions complete before this call read the
    champion ``base_version``); returns the champion's version at the end.

    Rounds: wait (at most ``wait_s`` s in all) while a concurrent version is in flight (no
    ``seqflow.status`` yet, created less than ``stale_after_s`` s before ``version``); then best =
    the passed version (promoted, same ``metric_key`` and ``test_set``) with the best metric
    (ties: the lowest version). The champion moves to it when the champion is another concurrent
    version that is strictly worse, or still ``base_version`` and ``promotes_over_base(best)``;
    a champion outside the concurrent versions was set by someone else and is left alone. Stops
    when a round moves nothing, or after :data:`MAX_ROUNDS` moves.
    """
    deadline = time.monotonic() + wait_s
    moves, champion = 0, None
    while True:
        versions = _versions(client, name)
        mine = next((v for v in versions if int(v.version) == version), None)
        created = mine.creation_timestamp if mine is not None else None
        window = [v for v in versions if int(v.version) not in history or int(v.version) == version]
        in_flight = [int(v.version) for v in window if int(v.version) != version
                     and not (v.tags or {}).get(TAG_STATUS)
                     and (created is None or v.creation_timestamp is None
                          or created - v.creation_timestamp < stale_after_s * 1000)]
        if in_flight and time.monotonic() < deadline:
            time.sleep(SETTLE_POLL_S)
            continue
        if in_flight:
            log.warning("%s: versions %s still registering after %.0f s; champion settled without them",
                        name, in_flight, wait_s)
        passed = {int(v.version): m for v in window if (m := _gate_metric(v, metric_key, test_set)) is not None}
        current = client.get_registered_model(name).aliases.get(champion_alias)
        champion = None if current is None else int(current)
        if not passed:
            return champion
        sign = 1.0 if lower_is_better else -1.0
        best = min(passed, key=lambda n: (sign * passed[n], n))
        if champion == best:
            return champion
        if champion in passed:
            move = sign * passed[best] < sign * passed[champion]
        else:
            move = champion == base_version and promotes_over_base(passed[best])
        if not move or moves >= MAX_ROUNDS:
            return champion
        log.info("%s: concurrent registrations left v%s champion; the gate's best is v%s (%s=%.6g): moving %s",
                 name, champion, best, metric_key, passed[best], champion_alias)
        set_alias(client, name, champion_alias, best)
        moves += 1
