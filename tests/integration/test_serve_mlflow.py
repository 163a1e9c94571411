"""`mlflow models serve` on the registered champion: a real REST server in a subprocess."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from seqflow.models.trigger_word import TriggerWordNet
from seqflow.serve.detector import save_detector
from seqflow.tracking.pyfunc import COLUMNS, log_trigger_word_model
from seqflow.tracking.registry import register_and_promote
from seqflow.tracking.runs import setup_mlflow

NAME = "seqflow-trigger-word"
SR = 16000
MODEL_CFG = {
    "features": {"sample_rate": SR, "n_fft": 512, "win_length": 400, "hop_length": 160, "n_mels": 40},
    "net": {"conv_channels": 8, "conv_kernel": 15, "conv_stride": 4, "gru_hidden": 8,
            "gru_layers": 1, "dropout": 0.0},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 2.0) -> int:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status


def _post_json(url: str, body: dict, timeout: float = 30.0) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


@pytest.fixture
def champion_store(tmp_path, monkeypatch):
    """A store whose `seqflow-trigger-word@champion` is a tiny untrained detector (threshold 0)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    setup_mlflow(uri, tmp_path / "mlartifacts", "seqflow/trigger_word")
    torch.manual_seed(0)
    net = TriggerWordNet(40, 8, 15, 4, 8, 1, 0.0)
    det = save_detector(tmp_path / "detector", net, MODEL_CFG, threshold=0.0, refractory_s=1.0)
    wav = (0.1 * np.random.default_rng(0).standard_normal(3 * SR)).astype(np.float32)
    with mlflow.start_run() as run:
        info = log_trigger_word_model(det, wav)
        mlflow.log_metric("test/frr_at_1fah", 0.2)
    assert register_and_promote(info.model_uri, NAME, run.info.run_id, "test/frr_at_1fah").promoted
    yield uri, wav
    mlflow.set_tracking_uri(None)


@pytest.mark.slow
def test_models_serve_champion_answers_invocations(champion_store, tmp_path):
    uri, wav = champion_store
    port = _free_port()
    bin_dir = Path(sys.executable).parent
    mlflow_bin = str(bin_dir / "mlflow")
    # mlflow execs `uvicorn` by name: the venv's bin must be on PATH even if it is not activated
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri,
           "PATH": os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")])}
    env.pop("MLFLOW_REGISTRY_URI", None)
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen(
        [mlflow_bin, "models", "serve", "-m", f"models:/{NAME}@champion", "--env-manager", "local",
         "-h", "127.0.0.1", "-p", str(port)],
        env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, (
                f"mlflow models serve exited with {proc.returncode}:\n"
                + (tmp_path / "serve.log").read_text(errors="replace")[-3000:])
            try:
                if _get(f"{base}/ping") == 200:
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert time.monotonic() < deadline, "server not healthy after 90 s:\n" + (
                tmp_path / "serve.log").read_text(errors="replace")[-3000:]
            time.sleep(0.5)

        status, body = _post_json(f"{base}/invocations", {"inputs": wav.tolist()})
        assert status == 200, body
        preds = body["predictions"]
        assert isinstance(preds, list) and len(preds) >= 1  # threshold 0 always fires
        for p in preds:
            assert set(p) == set(COLUMNS)
            assert 0.0 <= p["start"] <= p["end"] <= 3.0 and 0.0 <= p["score"] <= 1.0

        status, body = _post_json(f"{base}/invocations",
                                  {"inputs": wav[: SR].tolist(), "params": {"threshold": 1.5}})
        assert status == 200 and body["predictions"] == [], body

        status, body = _post_json(f"{base}/invocations", {"inputs": "not audio"})
        assert 400 <= status < 500, (status, body)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        log.close()
