"""The whole flow, end to end, on a tiny config: real TTS audio, DVC, WebDataset, Ray Train with
two ranks, MLflow (a real ``mlflow server`` over HTTP; SQLite for the model-family test) and
Prefect's ephemeral API — run as a user would, via the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from _mlflow_server import MlflowServer
from conftest import project_env

pytestmark = pytest.mark.slow
# credentials in a harmless config value: they must never reach MLflow (params, config.yaml, descriptions)
SECRETS = ("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMIK7MDENG", "tok3nSECRETvalue")
SECRET_OVERRIDE = ("+model.description='Corpus mirrored at "
                   f"s3://{SECRETS[0]}:{SECRETS[1]}@minio:9000/corpus?token={SECRETS[2]}'")


def _seqflow(project: Path, env: dict, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """The installed ``seqflow`` console script in ``project`` with ``env``, as a user would run it."""
    exe = Path(sys.executable).with_name("seqflow")
    return subprocess.run([str(exe), *args], cwd=project, env=env, capture_output=True, text=True, timeout=timeout)


def _user_backgrounds(folder: Path) -> Path:
    """A user's background folder: one real recording and two broken files."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    sf.write(folder / "street.wav", (0.05 * rng.standard_normal(3 * 22050)).astype(np.float32), 22050)
    (folder / "corrupt.flac").write_bytes(b"fLaC this is not a flac stream")
    sf.write(folder / "nan.wav", np.full(16000, np.nan, dtype=np.float32), 16000, subtype="FLOAT")
    return folder


def _tiny_eval_set(project: Path) -> Path:
    """A tiny real_words_en set (espeak voices the corpus does not use): 2 rows with the trigger
    word and 2 without, in each half."""
    from seqflow.audio.io import write_audio_atomic
    from seqflow.data.tts import EspeakTTS

    folder = project / "eval-data" / "real_words_en"
    tts, rows = EspeakTTS(), []
    texts = ["activate", "please activate now", "good morning", "seven", "activate", "activate the lights",
             "hello there", "eight"]
    for i, text in enumerate(texts):
        path = folder / "audio" / f"w{i}.flac"
        wav, sr = tts.render(text, "en-us+klatt", 160, 50)
        write_audio_atomic(path, wav, sr)
        rows.append({"audio_filepath": f"audio/w{i}.flac", "duration": len(wav) / sr, "text": text,
                     "lang": "en", "split": "dev" if i < 4 else "eval"})
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_pipeline_end_to_end(project: Path, tiny_overrides, tmp_path: Path) -> None:
    bg = _user_backgrounds(project.parent / "my_backgrounds")
    _tiny_eval_set(project)
    with MlflowServer(tmp_path / "mlflow-server") as server:
        # MLFLOW_TRACKING_URI (the server) wins over the config's sqlite:///<workdir>/mlflow.db
        env = {**project_env(project), "MLFLOW_TRACKING_URI": server.url}
        exe = Path(sys.executable).with_name("seqflow")
        flow = subprocess.Popen([str(exe), "pipeline", *tiny_overrides, f"data.background_dirs=[{bg}]",
                                 SECRET_OVERRIDE], cwd=project, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:  # the server starts while the corpus is built: the flow first talks to MLflow at train
            server.wait_healthy(120)
            stdout, stderr = flow.communicate(timeout=900)
        finally:
            if flow.poll() is None:
                flow.kill()
                flow.communicate()
        _check_pipeline(project, server, env, tiny_overrides, stdout + stderr, flow.returncode)


def _check_pipeline(project: Path, server: MlflowServer, env: dict, tiny_overrides, out: str, rc: int) -> None:
    assert rc == 0, out[-6000:]

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

    mlflow.set_tracking_uri(server.url)
    try:
        _check_tracking(project, server, env, tiny_overrides, out, dvc_text, mlflow.MlflowClient())
    finally:
        mlflow.set_tracking_uri(None)


def _check_tracking(project: Path, server: MlflowServer, env: dict, tiny_overrides, out: str, dvc_text: str,
                    client) -> None:
    import mlflow

    from seqflow.tracking.runs import short_version

    exp = client.get_experiment_by_name("seqflow/trigger_word_embedding")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.data.tags["ray.num_workers"] == "2"
    assert run.data.tags["data.dvc_md5"] in dvc_text
    # a descriptive run name: model, trigger word, data version
    assert run.info.run_name == f"trigger_word_embedding-activate-{short_version(run.data.tags['data.dvc_md5'])}"
    assert run.data.params["model.net.gru_hidden"] == "128"  # the default: speech-embedding front end
    for key in ("train/loss", "val/loss", "test/frr_at_0.5fah", "test/frr_at_1fah",
                "throughput/samples_per_s", "train/samples_rank0", "train/samples_rank1",
                "val/threshold", "val/frr", "test/frr", "test/fa_per_hour", "test/num_false_accepts",
                "test/confusable_trigger_rate", "best/val/loss"):
        assert key in run.data.metrics, key
    # system metrics, sampled on the training machine by the Ray worker of local rank 0
    for key in ("system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"):
        assert key in run.data.metrics, sorted(run.data.metrics)
    # the threshold chosen on val is the one test was measured at and the one packaged
    assert run.data.metrics["test/threshold"] == run.data.metrics["val/threshold"]
    assert run.data.tags["calibration.met"] in ("true", "false")
    assert run.data.tags["eval.test_set"].startswith("sha256:")
    # the tiny evaluation set: eval half only (2 rows with the trigger word, 2 without)
    assert run.data.metrics["eval/real_words_en/num_positives"] == 2
    assert run.data.metrics["eval/real_words_en/num_detected"] in (0, 1, 2)
    assert run.data.metrics["eval/real_words_en/hours"] > 0
    assert "eval.real_words_en.sha256" in run.data.tags
    assert "eval/real_noise/hours" not in run.data.metrics  # absent manifest: skipped
    assert run.data.metrics["train/samples_rank0"] == run.data.metrics["train/samples_rank1"] > 0
    # what validate found, on the training run (no run exists yet when validate runs)
    checked = json.loads(mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/data/validate.json"))
    assert run.data.metrics["data/files_total"] == checked["total"] > 0
    assert run.data.metrics["data/quarantined"] == checked["quarantined"]
    assert run.data.metrics["data/dropped"] == checked["dropped"] == 0 and checked["dropped_reasons"] == {}
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "plots")]
    assert "plots/det_curve.png" in artifacts
    examples = [a.path for a in client.list_artifacts(run.info.run_id, "examples")]
    assert sum(p.endswith(".flac") for p in examples) == 4  # augmented training clips, to listen to
    # the best checkpoint Ray Train kept, and which epoch/metric it is
    best = json.loads(mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/checkpoints/best.json"))
    assert str(best["epoch"]) == run.data.tags["checkpoint.best_epoch"]
    assert best["monitor"] == "val/loss" and best["value"] == run.data.metrics["best/val/loss"]
    assert "checkpoints/best.ckpt" in [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")]

    # register: a version with both aliases (first version: no champion yet, so it is promoted)
    name = "seqflow-trigger-word-emb-activate"
    mv = client.get_model_version_by_alias(name, "champion")
    assert mv.run_id == run.info.run_id
    assert client.get_model_version_by_alias(name, "challenger").version == mv.version
    assert client.list_artifacts(run.info.run_id, "package")  # what evaluate scored and register shipped
    assert "promoted" in client.get_run(run.info.run_id).data.tags.get("promotion.decision", "")
    description = client.get_registered_model(name).description
    assert '"activate"' in description and "`test/frr`" in description and "same test set" in description
    assert short_version(run.data.tags["data.dvc_md5"]) in mv.description and "`test/frr` =" in mv.description
    stored = json.dumps([run.data.params, run.data.tags, description, mv.description,
                         mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/config.yaml")])
    assert "minio:9000/corpus" in description and not [s for s in SECRETS if s in stored]

    # every artifact went through the server: mlflow-artifacts: URIs, files in its --artifacts-destination,
    # nothing in the project's mlartifacts/ (tracking.artifact_location is for local stores only)
    assert exp.artifact_location.startswith("mlflow-artifacts:")
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    assert mv.source.startswith("models:/m-")  # the logged pyfunc model; the version's files are stored through the server
    assert client.get_logged_model(mv.source.removeprefix("models:/")).artifact_location.startswith("mlflow-artifacts:")
    assert client.get_model_version_download_uri(name, mv.version).startswith("mlflow-artifacts:")
    run_dir = server.artifacts / exp.experiment_id / run.info.run_id / "artifacts"
    assert (run_dir / "checkpoints" / "best.ckpt").is_file() and any((run_dir / "package").iterdir())
    assert not (project / "mlartifacts").exists() and not (project / "mlruns").exists()
    assert not (project / "mlflow.db").exists()

    # the summary the user sees
    assert "seqflow pipeline finished" in out and name in out
    assert '"dropped": 0, "dropped_reasons": {}' in out   # validate: prepare drops beside its own counts

    # re-evaluate the champion on the current test split and sets, logged on its own run
    ev = _seqflow(project, env, "evaluate", f"models:/{name}@champion", *tiny_overrides, timeout=600)
    assert ev.returncode == 0, (ev.stdout + ev.stderr)[-3000:]
    assert "test/frr" in ev.stdout and run.info.run_id in ev.stdout
    again = client.get_run(run.info.run_id).data
    assert again.tags["eval.reevaluated_for"] == f"{name}/{mv.version}"
    assert again.metrics["test/frr"] == run.data.metrics["test/frr"]  # same package, same test set

    # detect through the registered model (pulled from the server) on a real clip; bad file → exit 2 naming it
    clip = next((project / "data" / "audio" / "test" / "positive").glob("*.flac"))
    det = _seqflow(project, env, "detect", str(clip), timeout=300)
    assert det.returncode == 0, det.stderr[-3000:]
    assert "detection(s)" in det.stdout
    bad = project / "not_audio.wav"
    bad.write_text("hello")
    det = _seqflow(project, env, "detect", str(bad), timeout=300)
    assert det.returncode == 2 and "not_audio.wav" in det.stderr
    assert not (project / "mlartifacts").exists() and not (project / "mlflow.db").exists()


def test_a_model_family_declared_outside_seqflow_trains_through_the_flow(project: Path, tiny_overrides,
                                                                         run_seqflow, monkeypatch) -> None:
    """Adding a model is one module (its FAMILY) plus config: no seqflow file names it, yet it
    shards, trains on two Ray ranks, is packaged, evaluated, registered and served."""
    toy_dir = Path(__file__).parent / "toy_family"
    monkeypatch.setenv("PYTHONPATH", f"{toy_dir}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    toy = ["model=trigger_word", "model.family=toy_trigger_family", "model.name=toy_trigger",
           "model.registered_name=seqflow-toy-trigger"]
    proc = run_seqflow(project, "pipeline", *tiny_overrides, *toy)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert "rank 0/2 trained on" in out and "rank 1/2 trained on" in out

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{project}/mlflow.db")
    client = mlflow.MlflowClient()
    mv = client.get_model_version_by_alias("seqflow-toy-trigger", "champion")
    run = client.get_run(mv.run_id)
    assert {"val/threshold", "test/frr", "test/fa_per_hour"} <= set(run.data.metrics)
    assert run.data.params["model.family"] == "toy_trigger_family"
    clip = next((project / "data" / "audio" / "test" / "positive").glob("*.flac"))
    det = run_seqflow(project, "detect", str(clip), "--model", "models:/seqflow-toy-trigger@champion", timeout=300)
    assert det.returncode == 0 and "detection(s)" in det.stdout, det.stderr[-3000:]
