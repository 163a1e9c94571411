"""Promotion gate against a real MLflow SQLite store: aliases, decisions, failure roll-back."""

from __future__ import annotations


import mlflow
import pytest
from mlflow.tracking import MlflowClient

from seqflow.tracking.registry import RegistrationError, register_and_promote
from _mlflow_store import store_with_logged_model

METRIC = "test/frr_at_1fah"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """(client, model_uri): one store per module and one real logged model (a tiny pyfunc)."""
    with store_with_logged_model(tmp_path_factory.mktemp("registry")) as client_and_uri:
        yield client_and_uri


def _run(metric: float | None, test_set: str | None = None) -> str:
    with mlflow.start_run() as run:
        if metric is not None:
            mlflow.log_metric(METRIC, metric)
        if test_set is not None:
            mlflow.set_tag("eval.test_set", test_set)
    return run.info.run_id


def _aliases(client: MlflowClient, name: str) -> dict[str, int]:
    return {a: int(v) for a, v in client.get_registered_model(name).aliases.items()}


def test_gate_first_champion_worse_stays_challenger_better_promoted(store):
    client, uri = store
    name = "seqflow-trigger-word"
    runs = [_run(0.30), _run(0.50), _run(0.10)]
    d1 = register_and_promote(uri, name, runs[0], METRIC, client=client, test_set_id="md5a/test")
    assert (d1.version, d1.promoted, d1.champion_version_before) == (1, True, None)
    assert _aliases(client, name) == {"challenger": 1, "champion": 1}

    d2 = register_and_promote(uri, name, runs[1], METRIC, client=client, test_set_id="md5a/test")
    assert (d2.version, d2.promoted, d2.comparable) == (2, False, True)
    assert (d2.challenger_metric, d2.champion_metric, d2.champion_version_before) == (0.5, 0.3, 1)
    assert _aliases(client, name) == {"challenger": 2, "champion": 1}

    d3 = register_and_promote(uri, name, runs[2], METRIC, client=client, test_set_id="md5a/test")
    assert (d3.version, d3.promoted, d3.champion_metric, d3.champion_version_before) == (3, True, 0.3, 1)
    assert _aliases(client, name) == {"challenger": 3, "champion": 3}

    for run_id, d, decision in zip(runs, (d1, d2, d3), ("promoted", "kept", "promoted")):
        data = client.get_run(run_id).data
        assert data.tags["promotion.decision"] == decision
        assert data.tags["promotion.reason"] == d.reason and d.reason
        assert data.tags["promotion.version"] == str(d.version)
        assert data.tags["eval.test_set"] == "md5a/test"
        assert data.metrics["promotion/challenger_metric"] == d.challenger_metric
        mv = client.get_model_version(name, str(d.version))
        assert mv.tags["seqflow.status"] == "ready" and mv.tags["promotion.decision"] == decision
        assert mv.run_id == run_id and mv.status == "READY"
    assert "promotion/champion_metric" not in client.get_run(runs[0]).data.metrics
    assert client.get_run(runs[1]).data.metrics["promotion/champion_metric"] == 0.3
    assert "0.5" in d2.reason and "0.3" in d2.reason


def test_ties_keep_and_higher_is_better(store):
    client, uri = store
    name = "gate-higher"
    register_and_promote(uri, name, _run(0.8), METRIC, lower_is_better=False, client=client)
    tie = register_and_promote(uri, name, _run(0.8), METRIC, lower_is_better=False, client=client)
    assert not tie.promoted
    better = register_and_promote(uri, name, _run(0.9), METRIC, lower_is_better=False, client=client)
    assert better.promoted and _aliases(client, name)["champion"] == better.version


def test_different_test_set_keeps_champion_unless_allowed(store):
    client, uri = store
    name = "gate-testset"
    register_and_promote(uri, name, _run(0.5), METRIC, client=client, test_set_id="old/test")
    d = register_and_promote(uri, name, _run(0.1), METRIC, client=client, test_set_id="new/test")
    assert not d.promoted and not d.comparable and "test sets differ" in d.reason
    assert _aliases(client, name) == {"challenger": 2, "champion": 1}
    assert client.get_run(client.get_model_version(name, "2").run_id).data.tags[
        "promotion.comparable"] == "false"
    # the run's own eval.test_set tag is used when test_set_id is not passed
    d = register_and_promote(uri, name, _run(0.9, test_set="new/test"), METRIC, client=client,
                             allow_test_set_change=True)
    assert d.promoted and not d.comparable and d.test_set_id == "new/test"
    assert _aliases(client, name)["champion"] == 3


def test_missing_metric_or_bad_uri_creates_nothing(store):
    client, uri = store
    name = "gate-nothing"
    with pytest.raises(RegistrationError, match="has no metric 'test/frr_at_1fah'"):
        register_and_promote(uri, name, _run(None), METRIC, client=client)
    run_id = _run(0.2)
    with pytest.raises(RegistrationError, match="models:/m-<id>"):
        register_and_promote(f"runs:/{run_id}/model", name, run_id, METRIC, client=client)
    with pytest.raises(RegistrationError, match="contradicts"):
        register_and_promote(uri, name, _run(0.2, test_set="a"), METRIC, client=client, test_set_id="b")
    assert client.search_model_versions(f"name='{name}'") == []


def test_failure_after_version_tags_it_failed_and_restores_aliases(store):
    client, uri = store
    name = "gate-rollback"
    register_and_promote(uri, name, _run(0.5), METRIC, client=client)

    class Broken(MlflowClient):
        def log_batch(self, *args, **kwargs):
            raise RuntimeError("tracking server went away")

    broken = Broken(mlflow.get_tracking_uri())
    run_id = _run(0.1)  # better: the champion alias is moved before the failing step
    with pytest.raises(RegistrationError, match=r"gate-rollback v2 .*'log decision on run'.*went away"):
        register_and_promote(uri, name, run_id, METRIC, client=broken)
    assert _aliases(client, name) == {"challenger": 1, "champion": 1}
    tags = client.get_model_version(name, "2").tags
    assert tags["seqflow.status"] == "failed" and "went away" in tags["seqflow.error"]
    assert "promotion.decision" not in client.get_run(run_id).data.tags


def test_two_trigger_words_register_under_two_names_each_with_a_champion(store):
    """A new trigger phrase is a new model: its first version is that name's champion, and the
    other phrase's champion is untouched (the gate runs on model.gate.metric = test/frr)."""
    from seqflow.config import load_config

    client, uri = store
    names = [load_config([f"data.trigger_word='{w}'"]).model.registered_name for w in ("activate", "hey jarvis")]
    assert names == ["seqflow-trigger-word-emb-activate", "seqflow-trigger-word-emb-hey-jarvis"]
    gate = load_config([]).model.gate
    decisions = []
    for name, frr in zip(names, (0.2, 0.6)):
        with mlflow.start_run() as run:
            mlflow.log_metric(gate.metric, frr)
        decisions.append(register_and_promote(uri, name, run.info.run_id, gate.metric, client=client,
                                              lower_is_better=gate.lower_is_better, test_set_id=f"sha256:{name}"))
    assert all(d.promoted and d.version == 1 for d in decisions)
    for name in names:
        assert _aliases(client, name) == {"challenger": 1, "champion": 1}


def test_model_version_resolves_alias_and_number_and_refuses_other_uris(store):
    from seqflow.errors import ConfigError
    from seqflow.tracking.registry import model_version

    client, uri = store
    with mlflow.start_run() as run:
        mlflow.log_metric(METRIC, 0.2)
    d = register_and_promote(uri, "resolve-me", run.info.run_id, METRIC, client=client, test_set_id="t")
    assert int(model_version("models:/resolve-me@champion", client).version) == d.version
    assert model_version(f"models:/resolve-me/{d.version}", client).run_id == run.info.run_id
    with pytest.raises(ConfigError, match="models:/"):
        model_version("runs:/abc/model", client)
