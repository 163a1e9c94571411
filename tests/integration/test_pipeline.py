"""The whole flow, end to end, on a tiny config: real TTS audio, DVC, WebDataset, Ray Train with
two ranks, MLflow (SQLite) and Prefect's ephemeral API — run as a user would, via the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytestmark = pytest.mark.slow


def _user_backgrounds(folder: Path) -> Path:
    """A user's background folder: one real recording and two broken files."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    sf.write(folder / "street.wav", (0.05 * rng.standard_normal(3 * 22050)).astype(np.float32), 22050)
    (folder / "corrupt.flac").write_bytes(b"fLaC this is not a flac stream")
    sf.write(folder / "nan.wav", np.full(16000, np.nan, dtype=np.float32), 16000, subtype="FLOAT")
    return folder


def test_pipeline_end_to_end(project: Path, tiny_overrides, run_seqflow) -> None:
    bg = _user_backgrounds(project.parent / "my_backgrounds")
    proc = run_seqflow(project, "pipeline", *tiny_overrides, f"data.background_dirs=[{bg}]")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]

    # bad input: the broken background files are quarantined with their reasons; the run went on
    rows = [json.loads(line) for line in (project / "data" / "quarantine.jsonl").read_text().splitlines()]
    reasons = {Path(r["audio_filepath"]).name.split("-", 1)[-1]: r["reason"] for r in rows}
    assert reasons == {"corrupt.flac": "unreadable", "nan.wav": "nan_or_inf"}, rows

    # version: top-level data.dvc with the directory md5, pushed to the local remote
    dvc_text = (project / "data.dvc").read_text()
    assert ".dir" in dvc_text and "path: data" in dvc_text
    assert any((project / "dvc-remote").rglob("*")), "dvc push wrote nothing to the remote"

    # shard: an index per split whose sha256 values match the tars
    from seqflow.shards.writer import verify_index

    indexes = sorted(project.glob("shards/*/*/index.json"))
    assert {p.parent.name for p in indexes} == {"train", "val", "test"}
    for idx in indexes:
        assert verify_index(idx) == [], idx
        assert json.loads(idx.read_text())["num_samples"] > 0

    # train: both ranks trained (per-rank sample counts in the log and as metrics)
    assert "rank 0/2 trained on" in out and "rank 1/2 trained on" in out

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{project}/mlflow.db")
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name("seqflow/trigger_word")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.data.tags["ray.num_workers"] == "2"
    assert run.data.tags["data.dvc_md5"] in dvc_text
    assert run.data.params["model.net.conv_channels"] == "196"
    for key in ("train/loss", "val/loss", "test/frr_at_0.5fah", "test/frr_at_1fah",
                "throughput/samples_per_s", "train/samples_rank0", "train/samples_rank1"):
        assert key in run.data.metrics, key
    assert run.data.metrics["train/samples_rank0"] == run.data.metrics["train/samples_rank1"] > 0
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "plots")]
    assert "plots/det_curve.png" in artifacts

    # register: a version with both aliases (first version: no champion yet, so it is promoted)
    mv = client.get_model_version_by_alias("seqflow-trigger-word", "champion")
    assert mv.run_id == run.info.run_id
    assert client.get_model_version_by_alias("seqflow-trigger-word", "challenger").version == mv.version
    assert run.data.metrics["test/frr_at_1fah"] >= 0.0
    assert "promoted" in client.get_run(run.info.run_id).data.tags.get("promotion.decision", "")

    # the summary the user sees
    assert "seqflow pipeline finished" in out and "seqflow-trigger-word" in out

    # detect through the registered model on a real clip; bad file → exit 2 naming it
    clip = next((project / "data" / "audio" / "test" / "positive").glob("*.flac"))
    det = run_seqflow(project, "detect", str(clip), timeout=300)
    assert det.returncode == 0, det.stderr[-3000:]
    assert "detection(s)" in det.stdout
    bad = project / "not_audio.wav"
    bad.write_text("hello")
    det = run_seqflow(project, "detect", str(bad), timeout=300)
    assert det.returncode == 2 and "not_audio.wav" in det.stderr
