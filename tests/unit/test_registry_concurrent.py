"""Concurrent ``register_and_promote`` calls on one real SQLite MLflow store, from real forked
processes: the champion always ends on the gate's best version and no version is left half
registered, with the per-model file lock (local stores) and with the version order that server
stores use (forced here with ``concurrency="order"``). Also: the lock's place and its bounded wait,
a crashed registration ahead in version order (waited for, named, then skipped once stale), a
hand-demoted champion never brought back, and which store gets which guard."""

from __future__ import annotations

import math
import multiprocessing as mp
import random
from pathlib import Path

import pytest
from _subprocesses import fork_all

from seqflow.tracking.promotion_guard import choose, local_store_path, lock_path

PROCS = 6
NAME = "seqflow-race"


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _setup(uri: str, art: str, q) -> None:
    q.put(_client(uri).create_experiment("race", artifact_location=art))


def _register(uri: str, exp: str, model_dir: str, name: str, metric: float, kwargs: dict, q) -> None:
    from seqflow.tracking.registry import register_and_promote

    try:
        client = _client(uri)
        run = client.create_run(exp).info.run_id
        client.log_metric(run, "test/frr", metric)
        d = register_and_promote(model_dir, name, run, "test/frr", client=client, timeout_s=60,
                                 test_set_id="md5/test", **kwargs)
        q.put((metric, d.version, d.reason, None))
    except Exception as e:  # noqa: BLE001 - reported to the parent, which fails the test with it
        q.put((metric, None, None, f"{type(e).__name__}: {e}"))


def _final_state(uri: str, name: str, q) -> None:
    client = _client(uri)
    versions = client.search_model_versions(f"name = '{name}'")
    q.put(({int(v.version): (v.status, dict(v.tags), client.get_run(v.run_id).data) for v in versions},
           dict(client.get_registered_model(name).aliases) if versions else {}))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """``(uri, experiment id, model dir, store root)`` of one fresh SQLite store (created in a
    forked process: the tables take seconds, once for this module)."""
    root = tmp_path_factory.mktemp("race-store")
    uri = f"sqlite:///{root}/mlflow.db"
    [exp] = fork_all(_setup, [(uri, str(root / "art"))])
    model = root / "model"
    model.mkdir()
    (model / "MLmodel").write_text("flavors: {}\n")
    return uri, exp, str(model), root


def _race_rounds(store, mode: str, rounds: int, seed: int) -> None:
    """``rounds`` rounds of :data:`PROCS` concurrent registrations (shuffled metrics, one NaN,
    each round its own model); asserts the end state of each."""
    uri, exp, model, _ = store
    rng = random.Random(seed)
    for r in range(rounds):
        name = f"{NAME}-{mode}-{r}"
        metrics = [0.1 + 0.05 * i for i in range(PROCS - 1)] + [math.nan]
        rng.shuffle(metrics)
        results = fork_all(_register, [(uri, exp, model, name, m, {"concurrency": mode}) for m in metrics])
        assert [e for *_, e in results if e] == []
        [(versions, aliases)] = fork_all(_final_state, [(uri, name)])
        assert sorted(versions) == list(range(1, PROCS + 1)) == sorted(v for _, v, _, _ in results)
        for v, (status, tags, run) in versions.items():  # no half version: complete and recorded on its run
            assert status == "READY" and tags["seqflow.status"] == "ready", (v, tags)
            assert run.tags["promotion.version"] == str(v) and tags["promotion.decision"] in ("promoted", "kept")
        gated = {v: run.metrics["test/frr"] for v, (_, _, run) in versions.items()
                 if not math.isnan(run.metrics["test/frr"])}
        best = min(gated, key=gated.get)
        assert aliases["champion"] == best, (mode, r, aliases, gated)
        nan_version = next(v for v, (_, _, run) in versions.items() if math.isnan(run.metrics["test/frr"]))
        assert versions[nan_version][1]["promotion.decision"] == "kept"


@pytest.mark.slow
def test_concurrent_registrations_end_on_the_best_version_with_the_lock_and_in_version_order(store):
    """One test (one work unit under xdist: one store): the lock (``auto`` on SQLite), then the
    version order that server stores use, forced on SQLite."""
    _race_rounds(store, "auto", rounds=2, seed=1)
    _, _, _, root = store
    locks = sorted((root / "mlflow.db.seqflow-locks").iterdir())  # beside the store, not inside it
    assert [p.name for p in locks] == sorted(lock_path(root / "mlflow.db", f"{NAME}-auto-{r}").name for r in range(2))
    assert locks[0].read_text().startswith("pid ")
    _race_rounds(store, "order", rounds=3, seed=2)


def _hold_lock(path: str, name: str, q) -> None:
    import time

    from seqflow.tracking.promotion_guard import Guard

    with Guard(name=name, lock=Path(path), lock_timeout_s=0).held():
        q.put("held")
        time.sleep(20)


def _register_expect_error(uri: str, exp: str, model_dir: str, name: str, q) -> None:
    from seqflow.tracking.registry import RegistrationError, register_and_promote

    client = _client(uri)
    run = client.create_run(exp).info.run_id
    client.log_metric(run, "test/frr", 0.2)
    try:
        register_and_promote(model_dir, name, run, "test/frr", client=client, lock_timeout_s=1.0)
        q.put(None)
    except RegistrationError as e:
        q.put(str(e))


def test_a_held_promotion_lock_fails_after_the_wait_naming_its_holder_and_creates_nothing(store):
    uri, exp, model, root = store
    name = f"{NAME}-held"
    path = lock_path(root / "mlflow.db", name)
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    holder = ctx.Process(target=_hold_lock, args=(str(path), name, q))
    holder.start()
    try:
        assert q.get(timeout=30) == "held"
        [error] = fork_all(_register_expect_error, [(uri, exp, model, name)])
    finally:
        holder.kill()
        holder.join()
    assert error is not None and f"promotion lock of '{name}' ({path}) not free within 1 s" in error
    assert f"held by pid {holder.pid} on host " in error
    [(versions, _)] = fork_all(_final_state, [(uri, name)])
    assert versions == {}


def _demoted_by_hand(uri: str, exp: str, model_dir: str, name: str, q) -> None:
    from seqflow.tracking.registry import register_and_promote

    client = _client(uri)

    def reg(metric):
        run = client.create_run(exp).info.run_id
        client.log_metric(run, "test/frr", metric)
        return register_and_promote(model_dir, name, run, "test/frr", client=client, concurrency="order")

    out = [reg(0.1).promoted, reg(0.3).promoted]
    client.set_registered_model_alias(name, "champion", "2")  # a person rolls back to v2 by hand
    out.append(reg(0.5).promoted)
    q.put((out, client.get_registered_model(name).aliases["champion"]))


def test_a_version_demoted_by_hand_is_never_brought_back(store):
    uri, exp, model, _ = store
    [(promoted, champion)] = fork_all(_demoted_by_hand, [(uri, exp, model, f"{NAME}-demoted")])
    assert promoted == [True, False, False]  # v3 (0.5) loses to v2 (0.3), the champion it read
    assert champion == 2  # v1 (0.1) passed the gate long ago, but is not brought back


def _crashed_ahead(uri: str, exp: str, model_dir: str, name: str, q) -> None:
    """v1 left ``registering`` (what a registration SIGKILLed after creating its version leaves),
    then: a second run's registration times out waiting for it; the wait skips it once stale; the
    crashed run registered again reuses v1 and completes it."""
    import logging

    from seqflow.tracking import promotion_guard
    from seqflow.tracking.registry import RegistrationError, register_and_promote

    client = _client(uri)
    runs = []
    for metric in (0.2, 0.1):
        runs.append(client.create_run(exp).info.run_id)
        client.log_metric(runs[-1], "test/frr", metric)
    client.create_registered_model(name)
    client.create_model_version(name, model_dir, runs[0], tags={"seqflow.status": "registering"})
    try:
        register_and_promote(model_dir, name, runs[1], "test/frr", client=client, concurrency="order",
                             lock_timeout_s=1.0)
        error = None
    except RegistrationError as e:
        error = str(e)
    v2 = client.get_model_version(name, "2").tags
    warnings = []
    handler = logging.Handler()
    handler.emit = lambda record: warnings.append(record.getMessage())
    promotion_guard.log.addHandler(handler)
    promotion_guard.wait_for_turn(client, name, 2, timeout_s=30, stale_after_s=0.5)
    retried = register_and_promote(model_dir, name, runs[0], "test/frr", client=client, concurrency="order",
                                   lock_timeout_s=1.0)
    q.put((error, runs[0], v2, warnings, retried.version, retried.promoted,
           client.get_model_version(name, "1").tags["seqflow.status"],
           dict(client.get_registered_model(name).aliases)))


def test_version_order_names_a_crashed_registration_ahead_skips_it_once_stale_and_completes_it_on_retry(store):
    uri, exp, model, _ = store
    name = f"{NAME}-crashed"
    [(error, run1, v2_tags, warnings, retried, promoted, v1_status, aliases)] = fork_all(
        _crashed_ahead, [(uri, exp, model, name)])
    assert error.startswith(f"{name} v2: v1 (run {run1}, created ") and "still registering after 1 s" in error
    assert error.endswith("Version tagged seqflow.status=failed; no alias moved.")
    assert v2_tags["seqflow.status"] == "failed" and "wait for turn" in v2_tags["seqflow.error"]
    assert len(warnings) == 1 and warnings[0].startswith(f"{name} v1 (run {run1}) still registering ")
    assert "taken for a crashed registration" in warnings[0]
    assert (retried, promoted, v1_status) == (1, True, "ready")  # reused, not a duplicate
    assert aliases == {"champion": 1, "challenger": 1}


class _Client:
    def __init__(self, uri):
        self._registry_uri = uri


@pytest.mark.parametrize("uri, store_path", [
    ("sqlite:////srv/p/mlflow.db", "/srv/p/mlflow.db"),
    ("sqlite:///mlflow.db", "{cwd}/mlflow.db"),
    ("file:///srv/p/mlruns", "/srv/p/mlruns"),
    ("./mlruns", "{cwd}/mlruns"),
    ("http://127.0.0.1:5000", None),
    ("https://mlflow.example.com", None),
    ("postgresql://u@db/mlflow", None),
    ("sqlite://", None),
])
def test_local_stores_lock_and_server_stores_go_by_version_order(uri, store_path, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    expected = None if store_path is None else Path(store_path.format(cwd=tmp_path.resolve()))
    assert local_store_path(uri) == expected
    guard = choose(_Client(uri), "m/x y", "auto", 5)
    if expected is None:
        assert guard.ordered and guard.lock is None
        with pytest.raises(ValueError, match="concurrency='lock' needs a local registry store"):
            choose(_Client(uri), "m", "lock")
    else:
        assert guard.lock.parent == expected.with_name(expected.name + ".seqflow-locks")
        assert guard.lock.name.startswith("m_x_y-") and guard.lock.suffix == ".lock"
        assert choose(_Client(uri), "m", "order").ordered
    with pytest.raises(ValueError, match="concurrency='serial': must be one of auto, lock, order"):
        choose(_Client(uri), "m", "serial")
