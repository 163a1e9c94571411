"""``seqflow evaluate models:/<name>@<alias>``: score a registered version on the *current* test
split and evaluation sets and log the numbers to the run that produced it.

The gate compares a challenger only with a champion measured on the same test set (content hash
``eval.test_set``); when the test set changes, re-evaluating the champion makes it comparable
again. The version's serving package (the pyfunc's artifacts) is what gets scored, so the numbers
are those of the model that is served.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

log = logging.getLogger("seqflow.evaluate")


def _model_version(client, uri: str):
    from seqflow.errors import ConfigError

    if not uri.startswith("models:/"):
        raise ConfigError(f"{uri!r}: expected models:/<name>@<alias> or models:/<name>/<version>")
    ref = uri[len("models:/"):]
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return client.get_model_version_by_alias(name, alias)
    name, _, version = ref.rpartition("/")
    return client.get_model_version(name, version)


def reevaluate(model_uri: str, overrides: list[str]) -> dict:
    """Evaluate ``model_uri`` with the config composed from ``overrides`` (``model=`` taken from
    the version's run when not given); returns ``{"run_id", "metrics", "tags"}``.

    Raises:
        ConfigError: bad URI; MlflowException: no such version/alias; ShardError / DVC errors:
        no corpus here (run the pipeline first).
    """
    import mlflow

    from seqflow import stages
    from seqflow.config import load_config
    from seqflow.families import get_family

    client = mlflow.MlflowClient()
    mv = _model_version(client, model_uri)
    run = client.get_run(mv.run_id)
    if not any(o.startswith("model=") for o in overrides):
        overrides = [*overrides, f"model={run.data.params.get('model.name', 'trigger_word')}"]
    cfg = load_config(overrides)
    stages.check_config(cfg)
    data = stages.version(cfg)
    shards = stages.shard(cfg, data["md5"])
    fam = get_family(cfg)
    mlflow.set_tracking_uri(cfg.tracking.tracking_uri)
    with tempfile.TemporaryDirectory(prefix="seqflow-reeval-") as tmp:
        local = Path(mlflow.artifacts.download_artifacts(f"models:/{mv.name}/{mv.version}", dst_path=tmp))
        found = sorted(p for p in (local / "artifacts").glob("*") if p.is_dir()) if (local / "artifacts").is_dir() else []
        if len(found) != 1:
            raise FileNotFoundError(f"{mv.name} v{mv.version}: expected one serving package folder under "
                                    f"{local}/artifacts, found {[p.name for p in found]}")
        pkg = found[0]
        ev = fam.evaluate(cfg, pkg, shards, Path(tmp) / "out")
        with mlflow.start_run(run_id=mv.run_id):
            mlflow.log_metrics(ev.metrics)
            mlflow.set_tags({**ev.tags, "eval.reevaluated_for": f"{mv.name}/{mv.version}"})
            for folder, paths in ev.artifacts.items():
                for p in paths:
                    mlflow.log_artifact(str(p), folder)
    log.info("re-evaluated %s v%s on test set %s", mv.name, mv.version, ev.tags["eval.test_set"])
    return {"run_id": mv.run_id, "metrics": ev.metrics, "tags": ev.tags}
