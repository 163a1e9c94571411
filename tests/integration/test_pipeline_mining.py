"""Hard-negative mining through the whole flow on the tiny config: round 1 → mine the train split →
round 2 on re-sharded train clips → evaluate and register round 2; both rounds nested MLflow runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

MINING = ["clips.hard_negative_mining.enabled=true",
          # round 1's val-calibrated threshold: a 1-epoch tiny model scores everything near one level, which a
          # fixed threshold may sit above or below; the train split (3x val's audio) exceeds val's at some step
          "clips.hard_negative_mining.threshold=null",
          "clips.hard_negative_mining.window_s=1.0",
          "clips.hard_negative_mining.max_windows=40",
          "clips.hard_negative_mining.mined_fraction=0.5"]


def test_mining_round_trains_twice_and_registers_round_two(project: Path, tiny_overrides, run_seqflow) -> None:
    proc = run_seqflow(project, "pipeline", *tiny_overrides, *MINING)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]

    import mlflow

    from seqflow.shards.reader import iter_samples
    from seqflow.tracking.runs import child_runs

    mlflow.set_tracking_uri(f"sqlite:///{project}/mlflow.db")
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name("seqflow/trigger_word_embedding")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(runs) == 3 and len(parents) == 1, [r.info.run_name for r in runs]
    parent = parents[0]
    r1, r2 = child_runs(parent.info.run_id)  # two nested runs, round 1 then round 2
    from seqflow.tracking.runs import short_version

    v = short_version(parent.data.tags["data.dvc_md5"])  # descriptive names: model-word-data version
    assert parent.info.run_name == f"trigger_word_embedding-activate-{v}-hard-negative-mining"
    assert (r1.info.run_name, r2.info.run_name) == (f"trigger_word_embedding-activate-{v}-round-1",
                                                    f"trigger_word_embedding-activate-{v}-round-2")
    assert (r1.data.tags["mining.round"], r2.data.tags["mining.round"]) == ("1", "2")

    # round 1: trained and calibrated on val, never evaluated; round 2 carries the test metrics
    assert "val/frr" in r1.data.metrics and not any(k.startswith("test/") for k in r1.data.metrics)
    assert "test/frr" in r2.data.metrics and r2.data.metrics["test/threshold"] == r2.data.metrics["val/threshold"]
    # the before/after on the parent; val is the same split in both rounds
    pm = parent.data.metrics
    n = pm["mining/num_windows"]
    assert 0 < n <= 40 and pm["mining/hours_scored"] > 0 and pm["mining/fa_per_hour"] > 0
    assert pm["round_1/val/frr"] == r1.data.metrics["val/frr"] and pm["round_2/val/frr"] == r2.data.metrics["val/frr"]
    assert pm["round_1/val/negative_hours"] == pm["round_2/val/negative_hours"]
    assert r2.data.metrics["mining/num_windows"] == n and parent.data.tags["mining.registered_round"] == "2"

    # the mined windows: from train audio only (train clips, or the corpus's train recordings)
    folder = Path(r2.data.tags["mining.windows_dir"])
    assert folder.parent.name == "mined" and folder.name == r1.info.run_id
    rows = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == n and all(r["split"] == "train" and (folder / r["audio_filepath"]).is_file() for r in rows)
    assert all(r["source_key"].startswith("train-") if r["source"] == "train_clip"
               else r["source_key"].startswith("audio/train/") for r in rows), rows

    # round 2 trained on re-sharded train clips holding mined negatives; val/test shards untouched
    r2_train = Path(r2.data.tags["mining.train_shards"]) / "index.json"
    segs = [s for _k, _w, meta in iter_samples(r2_train) for s in meta["segments"]]
    assert any(s.get("mined") for s in segs)
    root = Path(r1.data.tags["shards.uri"])
    assert r2.data.tags["shards.uri"] == str(root)
    assert not any(s.get("mined") for split in ("train", "val", "test")
                   for _k, _w, meta in iter_samples(root / split / "index.json") for s in meta["segments"])

    # register: round 2's package is the registered version
    mv = client.get_model_version_by_alias("seqflow-trigger-word-emb-activate", "champion")
    assert mv.run_id == r2.info.run_id
    assert "mining/num_windows" in out and "seqflow pipeline finished" in out
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["threshold_source"] == "val" and summary["threshold"] == r1.data.metrics["val/threshold"]
