"""Concurrent registrations of one model: they decide one after another, so the champion ends
on the gate's best version.

:func:`seqflow.tracking.registry.register_and_promote` reads the champion, decides with the gate
and moves the aliases. Two calls at once could interleave those steps so that the worse version
ends up champion. Both remedies make the calls decide **one at a time**; which one is chosen by
the registry URI (:func:`choose`):

* **local stores** (``sqlite:///<file>``, ``file:``/plain paths): an inter-process lock per
  registered model (``filelock``, an ``flock``) held from the version's creation to its
  ``ready`` tag. The lock files live in a folder *next to* the store, never inside it:
  ``<store>.seqflow-locks/<model>-<hash>.lock`` (``mlflow.db.seqflow-locks/`` beside
  ``mlflow.db``; ``mlruns.seqflow-locks/`` beside ``mlruns/``). Each holds the holder's pid,
  host and start time, named when the wait (``lock_timeout_s``) runs out. The OS frees it when
  the holder dies, even by SIGKILL.
* **servers** (``http(s)://``, ``databricks``, database URIs: no shared file system): **version
  order**. The version number the registry hands out is the ticket. Every seqflow version is
  created tagged ``seqflow.status=registering``; before reading the champion, a call waits
  (:func:`wait_for_turn`) until no lower version of the model is still ``registering``. Version
  numbers are assigned atomically by the store, so at most one call is between "read the
  champion" and "tag ready" at any time, as under the lock, and every call reads the aliases its
  predecessors wrote. A lower version still ``registering`` ``stale_after_s`` after its creation
  is taken for a crashed registration and no longer waited for (logged). Versions that lack the
  tag (registered by hand or by another tool) are not waited for.

A version set champion by hand is simply the champion the next call reads: nothing is ever
moved back.

>>> guard = choose(client, "seqflow-trigger-word-activate", "auto", lock_timeout_s=120)
>>> with guard.held():
...     ...                      # create → (wait for turn) → read → decide → set aliases → tag ready
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote, urlparse

log = logging.getLogger("seqflow.registry")

MODES = ("auto", "lock", "order")
LOCK_DIR_SUFFIX = ".seqflow-locks"
TURN_POLL_S = 0.2        # seconds between reads while a lower version is registering
TAG_STATUS = "seqflow.status"  # "registering" (set at creation) | "ready" | "failed"
REGISTERING = "registering"


class PromotionLockTimeout(Exception):
    """The per-model promotion lock was not free, or a lower version still registering, within the
    wait (the message names the holder)."""


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
    """How one registration is serialized: ``lock`` (a file path) or none (version ``order``)."""

    name: str
    lock: Path | None
    lock_timeout_s: float

    @property
    def ordered(self) -> bool:
        return self.lock is None

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold the model's promotion lock (no-op in version order).

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
    (:func:`local_store_path` of the registry URI) and goes by version order otherwise; ``lock`` /
    ``order`` force one (``lock`` on a server store is an error).

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
    use_lock = store is not None and mode != "order"
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


def wait_for_turn(client, name: str, version: int, timeout_s: float, stale_after_s: float) -> None:
    """Version order (server stores): return once no seqflow version of ``name`` numbered below
    ``version`` is still ``registering``. A lower version created more than ``stale_after_s`` s
    before this wait's end (server creation timestamps plus the time waited here) is taken for a
    crashed registration: logged once and skipped.

    Raises:
        PromotionLockTimeout: still waiting after ``timeout_s`` s; names the versions, their runs
            and creation times.
    """
    start = time.monotonic()
    deadline, skipped = start + timeout_s, set()
    while True:
        versions = list(client.search_model_versions(f"name = '{name}'"))
        mine = next((v for v in versions if int(v.version) == version), None)
        created = getattr(mine, "creation_timestamp", None)
        waited_ms = (time.monotonic() - start) * 1000
        ahead = []
        for v in versions:
            if int(v.version) >= version or (v.tags or {}).get(TAG_STATUS) != REGISTERING:
                continue
            age_s = None if created is None or v.creation_timestamp is None else \
                (created - v.creation_timestamp + waited_ms) / 1000
            if age_s is not None and age_s > stale_after_s:
                if int(v.version) not in skipped:
                    skipped.add(int(v.version))
                    log.warning("%s v%s (run %s) still registering %.0f s after its creation: taken for a "
                                "crashed registration, not waited for", name, v.version, v.run_id, age_s)
                continue
            ahead.append(v)
        if not ahead:
            return
        if time.monotonic() >= deadline:
            who = ", ".join(f"v{v.version} (run {v.run_id}, created "
                            f"{datetime.fromtimestamp(v.creation_timestamp / 1000, timezone.utc):%Y-%m-%d %H:%M:%S}"
                            f" UTC)" if v.creation_timestamp else f"v{v.version} (run {v.run_id})" for v in ahead)
            raise PromotionLockTimeout(
                f"{name} v{version}: {who} still registering after {timeout_s:g} s (registrations of one model "
                f"decide in version order; raise lock_timeout_s, or wait for them)")
        time.sleep(TURN_POLL_S)
