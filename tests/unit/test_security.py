"""Security (issue 9) on real files and a real SQLite MLflow store:

* a pickle payload in a weights/checkpoint file never executes on seqflow's load paths
  (``torch.load(weights_only=True)``; the same payload does execute with ``weights_only=False``);
* pyfunc models are logged as models-from-code (no pickled Python object), still load with
  ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false``; models logged the old (cloudpickled) way still load
  through seqflow's serving path; what MLflow's own loader does with a pickle-swapped model folder;
* credentials in URIs / secret-named keys never reach params, tags or the logged config.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from seqflow.config import load_config
from seqflow.errors import SeqflowError
from seqflow.models.trigger_word import TriggerWordNet
from seqflow.serve.detector import load_detector, save_detector
from seqflow.tracking.pyfunc import MODEL_CODE_NAME, TriggerWordPyfunc, log_trigger_word_model
from seqflow.tracking.redact import MARK, is_secret_key, redact, redact_config
from seqflow.tracking.runs import log_params_batched, standard_tags, start_training_run
from _mlflow_store import mlflow_store

SR = 16000
MODEL_CFG = {
    "features": {"sample_rate": SR, "n_fft": 512, "win_length": 400, "hop_length": 160, "n_mels": 40},
    "net": {"conv_channels": 8, "conv_kernel": 15, "conv_stride": 4, "gru_hidden": 8, "gru_layers": 1,
            "dropout": 0.0},
}
PICKLE_ENV = "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"


class Payload:
    """Unpickling this creates the folder ``marker`` (stands for any code an attacker runs)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def _write_payload(path: Path, marker: Path, fmt: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "torch":          # torch.save's zip format
        torch.save(Payload(marker), path)
    else:                       # a bare pickle stream (torch.load reads the legacy format too)
        path.write_bytes(pickle.dumps(Payload(marker), protocol=2))
    return path


def _wav(seconds: float, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)


def _detector_dir(root: Path) -> Path:
    torch.manual_seed(0)
    net = TriggerWordNet(40, conv_channels=8, conv_kernel=15, conv_stride=4, gru_hidden=8, gru_layers=1, dropout=0.0)
    return save_detector(root, net, MODEL_CFG, threshold=0.0, refractory_s=1.0)


# -- (2) weights and checkpoints: weights_only on every seqflow load path -------------------------

@pytest.mark.parametrize("fmt", ["torch", "pickle"])
def test_payload_is_live_with_weights_only_false(tmp_path, fmt) -> None:
    """Control: the payload used below really runs when a loader does not restrict unpickling."""
    marker = tmp_path / "pwned"
    path = _write_payload(tmp_path / "weights.pt", marker, fmt)
    with contextlib.suppress(RuntimeError):   # a bare pickle runs, then is "not a torch file"
        torch.load(path, map_location="cpu", weights_only=False)
    assert marker.is_dir()


def _swap_detector(tmp_path: Path, marker: Path, fmt: str):
    d = _detector_dir(tmp_path / "detector")
    _write_payload(d / "weights.pt", marker, fmt)
    return lambda: load_detector(d)


def _swap_transcriber(tmp_path: Path, marker: Path, fmt: str):
    from seqflow.models.ctc import CTCModel
    from seqflow.serve.transcriber import load_transcriber, save_transcriber
    from seqflow.text.tokenizers import CharTokenizer

    tok = CharTokenizer.from_texts(["set a timer"])
    tok.save(tmp_path / "tok")
    cfg = {"name": "ctc", "features": MODEL_CFG["features"],
           "net": {"d_model": 16, "num_heads": 2, "num_layers": 1, "d_ff": 32, "dropout": 0.0},
           "decoding": {"beam_size": 1}}
    d = save_transcriber(tmp_path / "transcriber", CTCModel(40, tok.vocab_size, **cfg["net"]), cfg, tmp_path / "tok")
    _write_payload(Path(d) / "weights.pt", marker, fmt)
    return lambda: load_transcriber(d)


def _swap_embedding_detector(tmp_path: Path, marker: Path, fmt: str):
    from seqflow.models.speech_embedding import EmbeddingTriggerNet, SpeechEmbeddingFrontEnd
    from seqflow.serve.embedding_detector import load_embedding_detector, save_embedding_detector

    model_cfg = {"name": "trigger_word_embedding", "family": "seqflow.families.trigger_word_embedding",
                 "embedding": {"input_scale": 1.0, "floor_db": -80.0},
                 "net": {"gru_hidden": 8, "gru_layers": 1, "dropout": 0.0}}
    d = save_embedding_detector(tmp_path / "package", EmbeddingTriggerNet(gru_hidden=8, gru_layers=1, dropout=0.0),
                                model_cfg, SpeechEmbeddingFrontEnd(), threshold=0.5, refractory_s=1.0)
    _write_payload(Path(d) / "weights.pt", marker, fmt)
    return lambda: load_embedding_detector(d)


def _swap_best_checkpoint(tmp_path: Path, marker: Path, fmt: str):
    from seqflow.lit.factory import load_net_from_checkpoint

    cfg = load_config(["model=trigger_word"])
    path = _write_payload(tmp_path / "checkpoint.ckpt", marker, fmt)
    return lambda: load_net_from_checkpoint(cfg, path)     # the package stage's load of the best checkpoint


def _swap_resume_checkpoint(tmp_path: Path, marker: Path, fmt: str):
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    path = _write_payload(tmp_path / "checkpoint.ckpt", marker, fmt)
    # what trainer.fit(ckpt_path=...) calls on a Ray Train restart (weights_only left to torch: True)
    return lambda: TorchCheckpointIO().load_checkpoint(path)


LOADERS = {"detector": _swap_detector, "transcriber": _swap_transcriber, "embedding_detector": _swap_embedding_detector,
           "best_checkpoint": _swap_best_checkpoint, "resume_checkpoint": _swap_resume_checkpoint}


@pytest.mark.parametrize("fmt", ["torch", "pickle"])
@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_pickle_payload_in_weights_never_executes(tmp_path, loader, fmt) -> None:
    marker = tmp_path / "pwned"
    load = LOADERS[loader](tmp_path, marker, fmt)
    with pytest.raises((SeqflowError, pickle.UnpicklingError, RuntimeError)) as info:
        load()
    assert not marker.exists(), f"{loader}: the payload ran"
    assert "weights" in str(info.value).lower() or "unsupported global" in str(info.value).lower(), str(info.value)


# -- (3) pyfunc models from code ------------------------------------------------------------------

@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """One detector logged from code (v2) and the same logged the old way, cloudpickled (v1)."""
    root = tmp_path_factory.mktemp("security-pyfunc")
    det_dir = _detector_dir(root / "detector")
    with mlflow_store(root, "seqflow/security") as uri:
        with mlflow.start_run():
            old = mlflow.pyfunc.log_model(name="old", python_model=TriggerWordPyfunc(),
                                          artifacts={"detector": str(det_dir)}, pip_requirements=["mlflow"],
                                          metadata={"seqflow.model": "trigger_word"})
            new = log_trigger_word_model(det_dir, _wav(1.0))
        for info in (old, new):
            mlflow.register_model(info.model_uri, "seqflow-security")
        yield {"old": old, "new": new, "root": root, "uri": uri, "client": MlflowClient()}


def _local(uri: str, dst: Path) -> Path:
    return Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(dst)))


def test_model_is_logged_from_code_without_pickles(logged, tmp_path, monkeypatch) -> None:
    model_dir = _local(logged["new"].model_uri, tmp_path)
    flavor = yaml.safe_load((model_dir / "MLmodel").read_text())["flavors"]["python_function"]
    assert flavor.get("model_code_path", "").endswith(MODEL_CODE_NAME) and "python_model" not in flavor, flavor
    assert "set_model(TriggerWordPyfunc())" in (model_dir / MODEL_CODE_NAME).read_text()
    assert not [p for p in model_dir.rglob("*.pkl")], sorted(model_dir.rglob("*"))
    monkeypatch.setenv(PICKLE_ENV, "false")   # MLflow refuses every cloudpickled pyfunc from here on
    frame = mlflow.pyfunc.load_model(logged["new"].model_uri).predict(_wav(3.0, seed=1))
    assert len(frame) >= 1    # threshold 0: the untrained net fires
    with pytest.raises(MlflowException, match="pickle is disallowed"):
        mlflow.pyfunc.load_model(logged["old"].model_uri)


def test_old_and_new_versions_load_through_seqflow_serving(logged) -> None:
    from seqflow.serve.models import ModelRef, load_version

    client = logged["client"]
    engines = {}
    for version in ("1", "2"):
        ref = ModelRef.parse(f"models:/seqflow-security/{version}")
        loaded = load_version(client, ref, client.get_model_version("seqflow-security", version))
        engines[version] = loaded.engine
    wav = _wav(3.0, seed=2)
    assert engines["1"].detect(wav) == engines["2"].detect(wav) and engines["2"].detect(wav)


def test_pickle_swapped_model_folder(logged, tmp_path, monkeypatch) -> None:
    """Weights swapped for a payload: refused by seqflow's loader inside MLflow's. The wrapper
    swapped for a cloudpickle (MLmodel edited to the old layout): refused when
    MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false; with MLflow's default (true) MLflow's own loader
    runs it before any seqflow code (documented in docs/security.md)."""
    model_dir = _local(logged["new"].model_uri, tmp_path / "model")
    marker = tmp_path / "pwned"
    weights = next(model_dir.glob("artifacts/*/weights.pt"))
    original = weights.read_bytes()
    _write_payload(weights, marker, "torch")
    with pytest.raises(SeqflowError, match="weights.pt: cannot load weights"):
        mlflow.pyfunc.load_model(str(model_dir))
    assert not marker.exists()

    weights.write_bytes(original)
    mlmodel = yaml.safe_load((model_dir / "MLmodel").read_text())
    flavor = mlmodel["flavors"]["python_function"]
    flavor.pop("model_code_path")
    flavor["python_model"] = "python_model.pkl"
    (model_dir / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    (model_dir / MODEL_CODE_NAME).unlink()
    _write_payload(model_dir / "python_model.pkl", marker, "pickle")
    monkeypatch.setenv(PICKLE_ENV, "false")
    with pytest.raises(MlflowException, match="pickle is disallowed"):
        mlflow.pyfunc.load_model(str(model_dir))
    assert not marker.exists()
    monkeypatch.delenv(PICKLE_ENV)
    with pytest.raises(Exception):   # MLflow unpickles (payload runs), then finds no PythonModel
        mlflow.pyfunc.load_model(str(model_dir))
    assert marker.is_dir(), "MLflow's default loader no longer unpickles: update docs/security.md"


# -- (4) credentials never land in MLflow ---------------------------------------------------------

AKIA = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY"
SIG = "f3a9c0de1b2a77e0c4d5"
GHP = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"


@pytest.mark.parametrize("text, expected", [
    (f"s3://{AKIA}:{SECRET}@minio:9000/b/ray", f"s3://{MARK}:{MARK}@minio:9000/b/ray"),
    ("https://user:hunter2@mlflow.example.com:5000", f"https://user:{MARK}@mlflow.example.com:5000"),
    (f"https://{GHP}@github.com/org/repo.git", f"https://{MARK}@github.com/org/repo.git"),
    (f"https://b.s3.amazonaws.com/k?X-Amz-Credential={AKIA}%2F20261207&X-Amz-Signature={SIG}&x=1",
     f"https://b.s3.amazonaws.com/k?X-Amz-Credential={MARK}&X-Amz-Signature={MARK}&x=1"),
    ("http://h/p?token=abc123&page=2", f"http://h/p?token={MARK}&page=2"),
    (f"AWS_SECRET_ACCESS_KEY={SECRET} aws s3 ls", f"AWS_SECRET_ACCESS_KEY={MARK} aws s3 ls"),
    ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.x", f"Authorization: Bearer {MARK}"),
    ("ssh://git@github.com/org/repo.git", "ssh://git@github.com/org/repo.git"),
    ("sqlite:////work/mlflow.db", "sqlite:////work/mlflow.db"),
    ("http://127.0.0.1:5000/#/experiments?tab=runs", "http://127.0.0.1:5000/#/experiments?tab=runs"),
    ('["s3://u:p@h/a", "/data/b"]', f'["s3://u:{MARK}@h/a", "/data/b"]'),
])
def test_redact(text, expected) -> None:
    assert redact(text) == expected
    assert redact(expected) == expected   # idempotent


def test_secret_keys() -> None:
    assert all(is_secret_key(k) for k in ("s3.aws_secret_access_key", "hub.token", "db.password", "api_key"))
    assert not any(is_secret_key(k) for k in ("model.tokenizer.vocab_size", "decoding.max_tokens", "data.keywords"))
    assert redact_config({"a": {"password": "x", "uri": "s3://u:p@h/b", "n": 3}}) == \
        {"a": {"password": MARK, "uri": f"s3://u:{MARK}@h/b", "n": 3}}


def test_credentials_never_reach_the_store(logged, tmp_path, monkeypatch) -> None:
    """Through seqflow's run start (params, tags, config.yaml) and params logged later; the store
    is the module's SQLite one (a second experiment)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    storage = f"s3://{AKIA}:{SECRET}@minio:9000/ckpt?X-Amz-Signature={SIG}"
    cfg = load_config([f"tracking.tracking_uri={logged['uri']}",
                       f"tracking.artifact_location={tmp_path}/art", f"ray.storage_path='{storage}'"])
    try:
        tags = standard_tags("m", "c", f"https://user:hunter2@shards.example.com/s?token={SIG}", 2)
        run_id = start_training_run(cfg, tags, run_name="security", keep_running=False)
        log_params_batched({"hub.token": GHP, "s3.aws_secret_access_key": SECRET, "note": f"key id {AKIA}"},
                           run_id=run_id, client=MlflowClient(cfg.tracking.tracking_uri))
        client = MlflowClient(cfg.tracking.tracking_uri)
        run = client.get_run(run_id)
        config = yaml.safe_load(mlflow.artifacts.load_text(f"{run.info.artifact_uri}/config.yaml"))
    finally:
        mlflow.set_tracking_uri(logged["uri"])
    stored = json.dumps({"params": run.data.params, "tags": run.data.tags, "config": config})
    for secret in (AKIA, SECRET, SIG, GHP, "hunter2"):
        assert secret not in stored, secret
    assert run.data.params["ray.storage_path"] == f"s3://{MARK}:{MARK}@minio:9000/ckpt?X-Amz-Signature={MARK}"
    assert config["ray"]["storage_path"] == run.data.params["ray.storage_path"]
    assert run.data.tags["shards.uri"] == f"https://user:{MARK}@shards.example.com/s?token={MARK}"
    assert run.data.params["hub.token"] == MARK and run.data.params["note"] == f"key id {MARK}"
    assert run.data.params["model.name"] == cfg.model.name   # everything else as before
