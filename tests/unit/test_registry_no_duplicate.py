"""Registering the same run again (a retried or re-run register stage) reuses its version: no
duplicate versions, aliases unchanged; a version tagged failed is not reused. Real SQLite store."""

from __future__ import annotations

import mlflow
import pytest

from _mlflow_store import store_with_logged_model
from seqflow.tracking.registry import register_and_promote

METRIC = "test/frr"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with store_with_logged_model(tmp_path_factory.mktemp("registry-dup")) as client_and_uri:
        yield client_and_uri


def _run(metric: float) -> str:
    with mlflow.start_run() as run:
        mlflow.log_metric(METRIC, metric)
    return run.info.run_id


def test_same_run_registered_twice_reuses_its_version(store):
    client, uri = store
    name = "seqflow-dup"
    champ, other = _run(0.2), _run(0.4)
    d1 = register_and_promote(uri, name, champ, METRIC, client=client, test_set_id="ts")
    d2 = register_and_promote(uri, name, other, METRIC, client=client, test_set_id="ts")
    again1 = register_and_promote(uri, name, champ, METRIC, client=client, test_set_id="ts")
    again2 = register_and_promote(uri, name, other, METRIC, client=client, test_set_id="ts")
    assert (d1.version, d2.version, again1.version, again2.version) == (1, 2, 1, 2)
    assert again1.promoted and "already champion" in again1.reason and not again2.promoted
    assert sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'")) == [1, 2]
    assert client.get_registered_model(name).aliases == {"champion": 1, "challenger": 2}


def test_a_failed_version_is_not_reused(store):
    client, uri = store
    name = "seqflow-dup-failed"
    run = _run(0.3)
    d1 = register_and_promote(uri, name, run, METRIC, client=client, test_set_id="ts")
    client.set_model_version_tag(name, str(d1.version), "seqflow.status", "failed")
    d2 = register_and_promote(uri, name, run, METRIC, client=client, test_set_id="ts")
    assert (d1.version, d2.version) == (1, 2)
