"""Stage reuse on a real Prefect ephemeral API and MLflow SQLite store: the same inputs reuse a
finished stage, other inputs or ``--no-cache`` run it, and a cached result that points at a
deleted file or MLflow run is not trusted."""

from __future__ import annotations

import textwrap
from pathlib import Path

from _subprocesses import run_flow_script

SCRIPT = textwrap.dedent("""
    import json, shutil, sys
    from pathlib import Path
    import mlflow
    from prefect import flow, task
    from seqflow import stage_cache

    tmp = Path(sys.argv[1]); uri = f"sqlite:///{tmp}/mlflow.db"
    ran = []

    @task(name="shard", **stage_cache.CACHED)
    def shard(cfg: dict, md5: str) -> dict:
        ran.append("shard"); root = tmp / f"shards-{md5}"; root.mkdir(exist_ok=True)
        return {"root": str(root)}

    @task(name="train", **stage_cache.CACHED)
    def train(cfg: dict, shards: dict) -> dict:
        ran.append("train"); c = mlflow.MlflowClient(uri)
        exp = c.get_experiment_by_name("t") or c.get_experiment(c.create_experiment("t"))
        return {"run_id": c.create_run(exp.experiment_id).info.run_id}

    @flow
    def pipe(cfg: dict, md5: str) -> dict:
        ran.clear()
        s = stage_cache.run_stage(shard, uri, cfg, md5)
        t = stage_cache.run_stage(train, uri, cfg, s)
        return {"ran": list(ran), "train": t}

    out = {"first": pipe({"a": 1}, "m1"), "same": pipe({"a": 1}, "m1"),
           "flow_only": pipe({"a": 1, "flow": {"timeouts": {"train": 5}, "cron": "0 4 * * *"}}, "m1"),
           "other_cfg": pipe({"a": 2}, "m1")}
    stage_cache.set_refresh(True)
    out["no_cache"] = pipe({"a": 1}, "m1")
    stage_cache.set_refresh(False)
    mlflow.MlflowClient(uri).delete_run(out["no_cache"]["train"]["run_id"])
    out["run_deleted"] = pipe({"a": 1}, "m1")
    shutil.rmtree(tmp / "shards-m1")
    out["shards_deleted"] = pipe({"a": 1}, "m1")
    print(json.dumps(out))
""")


def test_stages_are_reused_until_inputs_change_or_outputs_vanish(tmp_path: Path) -> None:
    out = run_flow_script(SCRIPT, tmp_path)
    assert out["first"]["ran"] == ["shard", "train"]
    assert out["same"]["ran"] == [] and out["same"]["train"] == out["first"]["train"]
    assert out["flow_only"]["ran"] == []  # schedule and stage limits never change a stage's result
    assert out["other_cfg"]["ran"] == ["shard", "train"]
    assert out["no_cache"]["ran"] == ["shard", "train"] and out["no_cache"]["train"] != out["first"]["train"]
    assert out["run_deleted"]["ran"] == ["train"]  # shard reused; the cached train's run is gone
    assert out["shards_deleted"]["ran"] == ["shard"]  # re-made at the same root: train still reused
