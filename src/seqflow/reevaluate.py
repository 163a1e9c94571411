"""``seqflow evaluate models:/<name>@<alias>``: score a registered version on the *current* test
split and evaluation sets and log the numbers to the run that produced it.

The gate compares a challenger only with a champion measured on the same test set (content hash
``eval.test_set``); when the test set changes, re-evaluating the champion makes it comparable
again. The version's serving package (the pyfunc's artifacts) is what gets scored, so the numbers
are those of the model that is served.
"""

from __future__ import annotations

import logging

log = logging.getLogger("seqflow.evaluate")


def reevaluate(model_uri: str, overrides: list[str]) -> dict:
    """Evaluate ``model_uri`` with the config composed from ``overrides`` (``model=`` taken from
    the version's run when not given); returns ``{"run_id", "metrics", "tags"}``.

    Raises:
        ConfigError: bad URI; MlflowException: no such version/alias; ShardError / DVC errors:
        no corpus here (run the pipeline first).
    """
    import os

    from seqflow import stages
    from seqflow.config import load_config
    from seqflow.families import get_family
    from seqflow.tracking.artifacts import downloaded, log_results, package_folder
    from seqflow.tracking.registry import model_version
    from seqflow.tracking.runs import run_params, use_store

    use_store(os.environ.get("MLFLOW_TRACKING_URI") or load_config(overrides).tracking.tracking_uri)
    mv = model_version(model_uri)
    if not any(o.startswith("model=") for o in overrides):
        overrides = [*overrides, f"model={run_params(mv.run_id).get('model.name', 'trigger_word')}"]
    cfg = load_config(overrides)
    stages.check_config(cfg)
    data = stages.version(cfg)
    shards = stages.shard(cfg, data["md5"])
    with downloaded(f"models:/{mv.name}/{mv.version}", prefix="seqflow-reeval-") as local:
        ev = get_family(cfg).evaluate(cfg, package_folder(local), shards, local.parent / "out")
        log_results(mv.run_id, ev.metrics, {**ev.tags, "eval.reevaluated_for": f"{mv.name}/{mv.version}"},
                    files=ev.artifacts)
    log.info("re-evaluated %s v%s on test set %s", mv.name, mv.version, ev.tags["eval.test_set"])
    return {"run_id": mv.run_id, "metrics": ev.metrics, "tags": ev.tags}
