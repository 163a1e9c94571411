"""Speech recognition through the same flow: ``model=ctc`` on the tiny config registers
``seqflow-asr-ctc`` with WER and CER; ``seqflow transcribe`` uses the registered model."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_pipeline_ctc_registers_version_with_wer_and_cer(project: Path, tiny_overrides, run_seqflow) -> None:
    proc = run_seqflow(project, "pipeline", *tiny_overrides, "model=ctc", "data.num_sentences=40")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{project}/mlflow.db")
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name("seqflow/ctc")
    (run,) = client.search_runs([exp.experiment_id])
    for key in ("train/loss", "val/loss", "val/wer", "val/cer", "test/wer", "test/cer",
                "test/synthetic/wer", "throughput/samples_per_s"):
        assert key in run.data.metrics, key
    assert run.data.tags["ray.num_workers"] == "2"
    mv = client.get_model_version_by_alias("seqflow-asr-ctc", "challenger")
    assert mv.run_id == run.info.run_id
    assert {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")} >= {"evaluation/hypotheses.md"}

    clip = next((project / "data" / "audio" / "test" / "utterance").glob("*.flac"))
    res = run_seqflow(project, "transcribe", str(clip), "--model", f"models:/seqflow-asr-ctc/{mv.version}",
                      timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.startswith(f"{clip}\t")
