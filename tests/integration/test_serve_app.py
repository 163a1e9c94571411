"""`seqflow serve` as a real process against a real `mlflow server` (SQLite + local artifacts).

One module-scoped set-up, in this order: the serve process starts while MLflow is down (health
must say so, 503), then the MLflow server starts and the models load (back-off retry); meanwhile a
second serve process with an alias that does not exist must exit 2 listing the aliases that do.
Two registered models share the server: a tiny trigger-word detector (v1 threshold 0: always
fires; v2 threshold 1: never fires) and a tiny CTC recognizer.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
import requests
import soundfile as sf
import torch
from mlflow.tracking import MlflowClient
from websockets.sync.client import connect

from seqflow.models.ctc import CTCModel
from seqflow.models.trigger_word import TriggerWordNet
from seqflow.serve.detector import save_detector
from seqflow.serve.transcriber import save_transcriber
from seqflow.text.tokenizers import CharTokenizer
from seqflow.tracking.pyfunc import log_asr_model, log_trigger_word_model
from seqflow.tracking.registry import register_and_promote
from seqflow.tracking.runs import setup_mlflow

SR = 16000
TW, ASR = "seqflow-trigger-word-serve-test", "seqflow-asr-serve-test"
TW_CFG = {"features": {"sample_rate": SR, "n_fft": 512, "win_length": 400, "hop_length": 160, "n_mels": 40},
          "net": {"conv_channels": 8, "conv_kernel": 15, "conv_stride": 4, "gru_hidden": 8, "gru_layers": 1,
                  "dropout": 0.0}}
ASR_CFG = {"name": "ctc", "features": TW_CFG["features"],
           "net": {"d_model": 32, "num_heads": 2, "num_layers": 1, "d_ff": 64, "dropout": 0.0},
           "decoding": {"beam_size": 1}}
pytestmark = pytest.mark.slow  # two real servers: ~40 s of set-up
START_TIMEOUT_S = 240  # servers start slowly on a loaded 2-core box
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _noise(seconds: float, seed: int = 0, sr: int = SR, channels: int = 1) -> np.ndarray:
    shape = (int(seconds * sr),) if channels == 1 else (int(seconds * sr), channels)
    return (0.1 * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def _encoded(wav: np.ndarray, sr: int, fmt: str) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wav, sr, format=fmt, subtype=None if fmt == "OGG" else "PCM_16")
    return buf.getvalue()


def _build_store(root: Path) -> str:
    """SQLite store: TW v1 (threshold 0, champion) and v2 (threshold 1, challenger); ASR v1 champion."""
    uri = f"sqlite:///{root}/mlflow.db"
    setup_mlflow(uri, root / "mlartifacts", "seqflow/serve-test")
    torch.manual_seed(0)
    net = TriggerWordNet(40, 8, 15, 4, 8, 1, 0.0)
    for version, (threshold, frr) in enumerate(((0.0, 0.2), (1.0, 0.3)), start=1):
        det = save_detector(root / f"det{version}", net, TW_CFG, threshold=threshold, refractory_s=1.0)
        with mlflow.start_run() as run:
            info = log_trigger_word_model(det, _noise(1.0))
            mlflow.log_metric("test/frr", frr)
            mlflow.set_tag("data.dvc_md5", f"md5-of-data-{version}")
        register_and_promote(info.model_uri, TW, run.info.run_id, "test/frr")
    tok = CharTokenizer.from_texts(["set a timer"])
    tok.save(root / "tok")
    ctc = CTCModel(40, tok.vocab_size, **ASR_CFG["net"])
    torch.nn.init.normal_(ctc.ctc_head.bias, std=3.0)  # an untrained net that still emits characters
    with mlflow.start_run() as run:
        info = log_asr_model(save_transcriber(root / "asr", ctc, ASR_CFG, root / "tok"), _noise(1.0))
        mlflow.log_metric("test/wer", 0.9)
    register_and_promote(info.model_uri, ASR, run.info.run_id, "test/wer")
    mlflow.set_tracking_uri(None)
    return uri


def _spawn(cmd: list[str], log: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=env, cwd=log.parent, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # mlflow's huey workers linger after SIGTERM
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
    except ProcessLookupError:
        pass


def _wait(what: str, check, proc: subprocess.Popen, log: Path, timeout: float = START_TIMEOUT_S):
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"{what}: process exited {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}"
        try:
            out = check()
            if out:
                return out
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, f"{what} not reached in {timeout} s:\n{log.read_text(errors='replace')[-3000:]}"
        time.sleep(0.3)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-app")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    mlflow_port, serve_port = _free_port(), _free_port()
    http_uri, base = f"http://127.0.0.1:{mlflow_port}", f"http://127.0.0.1:{serve_port}"
    serve = _spawn([str(BIN / "seqflow"), "serve", "--model", f"models:/{TW}@champion", "--model",
                    f"models:/{ASR}@champion", "--port", str(serve_port), "serve.poll_interval_s=1",
                    "serve.mlflow_retry.initial_s=0.5", "serve.mlflow_retry.max_s=1", "serve.limits.max_body_mb=1",
                    "serve.limits.max_audio_s=5"], root / "serve.log", {**env, "MLFLOW_TRACKING_URI": http_uri})
    procs = [serve]
    try:
        store = _build_store(root)  # while the serve process boots
        missing = _spawn([str(BIN / "seqflow"), "serve", "--model", f"models:/{TW}@nope", "--port", str(_free_port()),
                          "--tracking-uri", store], root / "missing.log", env)
        procs.append(missing)
        # a list, because a 503 Response is falsy
        # the first answers may say "loading" (mlflow "unknown") until the first registry call fails
        down = _wait("serve /health after its first MLflow attempt",
                     lambda: [r for r in [requests.get(f"{base}/health", timeout=5)] if r.json()["mlflow"] != "unknown"],
                     serve, root / "serve.log")[0]
        mlflow_server = _spawn([str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(mlflow_port),
                                "--workers", "1", "--backend-store-uri", store], root / "mlflow.log", env)
        procs.append(mlflow_server)
        _wait("models loaded", lambda: requests.get(f"{base}/health", timeout=5).status_code == 200, serve,
              root / "serve.log")
        yield {"base": base, "down": down, "missing": missing, "root": root, "client": MlflowClient(http_uri),
               "proc": serve, "store": store}
    finally:
        for p in procs:
            _stop(p)


def _one_line_error(r: requests.Response, status: int, reason: str) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert body["reason"] == reason and body["status"] == status, body
    assert "\n" not in body["error"] and "Traceback" not in r.text and body["error"]
    assert body["request_id"] == r.headers["x-request-id"]
    return body


def test_health_told_the_truth_while_mlflow_was_down(served) -> None:
    r = served["down"]
    assert r.status_code == 503, r.text
    body = r.json()
    assert body["status"] == "unavailable" and body["mlflow"] == "unreachable", body
    assert {m["state"] for m in body["models"]} == {"mlflow_unreachable"}
    assert all("retrying" in m["detail"] for m in body["models"])


def test_missing_alias_exits_2_listing_existing_aliases(served) -> None:
    proc = served["missing"]
    assert proc.wait(timeout=120) == 2
    text = (served["root"] / "missing.log").read_text()
    assert "'nope'" in text and "champion (v1)" in text and "challenger (v2)" in text and "Traceback" not in text


def test_health_model_and_metrics(served) -> None:
    base = served["base"]
    health = requests.get(f"{base}/health").json()
    assert health["status"] == "ready" and health["mlflow"] == "reachable"
    assert {(m["name"], m["version"], m["task"]) for m in health["models"]} == {(TW, "1", "detect"),
                                                                                 (ASR, "1", "transcribe")}
    models = {m["name"]: m for m in requests.get(f"{base}/model").json()["models"]}
    tw = models[TW]
    assert tw["version"] == "1" and tw["alias"] == "champion" and tw["family"] == "trigger_word"
    assert tw["gate"]["metric_key"] == "test/frr" and tw["gate"]["value"] == pytest.approx(0.2)
    assert tw["gate"]["decision"] == "promoted" and tw["metrics"]["test/frr"] == pytest.approx(0.2)
    assert tw["data_version"] == "md5-of-data-1" and tw["threshold"] == 0.0
    assert models[ASR]["family"] == "ctc" and models[ASR]["gate"]["metric_key"] == "test/wer"
    metrics = requests.get(f"{base}/metrics").text
    assert f'seqflow_model_version{{alias="champion",model="{TW}"}} 1.0' in metrics
    assert 'seqflow_requests_total{endpoint="/health",method="GET",status="503"}' in metrics
    assert "seqflow_request_latency_seconds_bucket" in metrics


def test_detect_takes_wav_multipart_and_json(served) -> None:
    base = served["base"]
    stereo = _noise(2.0, seed=1, sr=44100, channels=2)
    answers = [
        requests.post(f"{base}/v1/detect", data=_encoded(stereo, 44100, "WAV"), headers={"Content-Type": "audio/wav",
                                                                                          "X-Request-ID": "abc-123"}),
        requests.post(f"{base}/v1/detect", files={"file": ("clip.flac", _encoded(_noise(2.0, 2), SR, "FLAC"))}),
        requests.post(f"{base}/v1/detect", files={"file": ("clip.ogg", _encoded(_noise(2.0, 3, 22050), 22050, "OGG"))}),
        requests.post(f"{base}/v1/detect", json={"audio": _noise(2.0, 4, 8000).tolist(), "sample_rate": 8000}),
    ]
    for r in answers:
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model_version"] == "1" == r.headers["x-model-version"] and body["model"] == TW
        assert body["request_id"] == r.headers["x-request-id"]
        assert body["detections"], body  # v1's threshold 0 always fires
        for d in body["detections"]:
            assert 0.0 <= d["start"] <= d["end"] <= 2.0 + 1e-6 and 0.0 <= d["score"] <= 1.0
        assert body["audio"]["duration_s"] == pytest.approx(2.0, abs=1e-3)
    assert answers[0].json()["request_id"] == "abc-123"
    assert answers[0].json()["audio"] == {"duration_s": 2.0, "sample_rate_in": 44100, "channels": 2, "source": "bytes"}
    assert [a.json()["audio"]["source"] for a in answers[1:]] == ["multipart", "multipart", "json"]
    r = requests.post(f"{base}/v1/detect?threshold=1", data=_encoded(_noise(1.0), SR, "WAV"))
    assert r.status_code == 200 and r.json()["detections"] == [] and r.json()["threshold"] == 1.0


def test_transcribe_routes_to_the_asr_model(served) -> None:
    r = requests.post(f"{served['base']}/v1/transcribe", data=_encoded(_noise(1.5), SR, "FLAC"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == ASR and body["model_version"] == "1" and isinstance(body["text"], str)
    _one_line_error(requests.post(f"{served['base']}/v1/transcribe?model={TW}", data=_encoded(_noise(1.0), SR, "WAV")),
                    400, "wrong_family")


def test_bad_input_is_a_one_line_4xx(served) -> None:
    url = f"{served['base']}/v1/detect"
    wav = _encoded(_noise(1.0), SR, "WAV")
    _one_line_error(requests.post(url, data=b"\0" * (2 * 2**20)), 413, "body_too_large")  # limit 1 MB here
    _one_line_error(requests.post(url, data=_encoded(np.zeros(6 * SR, np.float32), SR, "FLAC")), 413, "audio_too_long")
    _one_line_error(requests.post(url, data=b"this is not audio", headers={"Content-Type": "audio/wav"}), 400, "not_audio")
    _one_line_error(requests.post(url, data=b"", headers={"Content-Type": "audio/wav"}), 400, "empty")
    _one_line_error(requests.post(url, data=b'{"audio": [0.1, NaN], "sample_rate": 16000}',
                                  headers={"Content-Type": "application/json"}), 400, "nan_or_inf")
    float_nan = io.BytesIO()
    sf.write(float_nan, np.array([0.0, np.nan] * 800, dtype=np.float32), SR, format="WAV", subtype="FLOAT")
    _one_line_error(requests.post(url, data=float_nan.getvalue()), 400, "nan_or_inf")
    _one_line_error(requests.post(url, json={"audio": [0.1] * 100}), 422, "invalid_json_audio")
    _one_line_error(requests.post(url, data="hello", headers={"Content-Type": "text/plain"}), 415,
                    "unsupported_media_type")
    body = _one_line_error(requests.post(f"{url}?threshold=2", data=wav), 422, "invalid_parameter")
    assert body["model_version"] == "1"
    _one_line_error(requests.post(f"{url}?model=unknown", data=wav), 404, "unknown_model")
    _one_line_error(requests.get(f"{served['base']}/no/such/path"), 404, "not_found")
    errors = requests.get(f"{served['base']}/metrics").text
    assert 'seqflow_request_errors_total{endpoint="/v1/detect",reason="audio_too_long"} 1.0' in errors


def test_stream_sends_detection_events(served) -> None:
    pcm = (_noise(2.0, seed=5) * 32767).astype("<i2").tobytes()
    ws_url = served["base"].replace("http://", "ws://") + "/v1/stream"
    with connect(ws_url, open_timeout=30) as ws:
        ready = json.loads(ws.recv(timeout=30))
        assert ready["type"] == "ready" and ready["model_version"] == "1" and ready["sample_rate"] == SR
        events = []
        for i in range(0, len(pcm), 641):  # odd sizes: a frame may split a sample
            ws.send(pcm[i:i + 641])
        ws.send(json.dumps({"type": "end"}))
        while True:
            event = json.loads(ws.recv(timeout=30))
            events.append(event)
            if event["type"] == "end":
                break
    detections = [e for e in events if e["type"] == "detection"]
    assert detections and all(e["model_version"] == "1" and e["model"] == TW for e in detections)
    assert set(detections[0]) >= {"start", "end", "score", "model_version"} and 0 <= detections[0]["start"] <= 2.0
    assert events[-1]["duration_s"] == pytest.approx(2.0)


def test_alias_move_is_followed_and_removal_keeps_serving(served) -> None:
    base, client = served["base"], served["client"]
    client.set_registered_model_alias(TW, "champion", "2")
    proc, log = served["proc"], served["root"] / "serve.log"
    _wait("champion v2 loaded", lambda: requests.get(f"{base}/health").json()["models"][0]["version"] == "2",
          proc, log, timeout=60)
    r = requests.post(f"{base}/v1/detect", data=_encoded(_noise(2.0), SR, "WAV"))
    assert r.json()["model_version"] == "2" and r.json()["detections"] == []  # v2's threshold 1 never fires
    client.delete_registered_model_alias(TW, "champion")
    health = _wait("alias removal seen", lambda: (lambda h: h if h["status"] == "degraded" else None)(
        requests.get(f"{base}/health").json()), proc, log, timeout=60)
    tw = next(m for m in health["models"] if m["name"] == TW)
    assert tw["alias_missing"] and tw["version"] == "2" and "still serving version 2" in tw["detail"]
    assert requests.post(f"{base}/v1/detect", data=_encoded(_noise(1.0), SR, "WAV")).json()["model_version"] == "2"


def test_onnx_engine_answers_like_pytorch(served, tmp_path, monkeypatch) -> None:
    """What `seqflow serve --onnx` loads: the version's onnxruntime twin (seqflow.export), same answers."""
    from seqflow.export import OnnxDetector
    from seqflow.serve.models import ModelRef, load_version

    monkeypatch.setenv("SEQFLOW_ONNX_CACHE", str(tmp_path / "onnx"))
    mlflow.set_tracking_uri(served["store"])
    try:
        client = MlflowClient(served["store"])
        ref = ModelRef.parse(f"models:/{TW}/1")
        mv = client.get_model_version(TW, "1")
        onnx, torch_ = load_version(client, ref, mv, onnx=True), load_version(client, ref, mv)
    finally:
        mlflow.set_tracking_uri(None)
    assert isinstance(onnx.engine, OnnxDetector) and onnx.info["engine"] == "onnxruntime"
    assert torch_.info["engine"] == "pytorch" and onnx.version == torch_.version == "1"
    wav = _noise(3.0, seed=7)
    got, want = onnx.engine.scores(wav)[0], torch_.engine.scores(wav)[0]
    assert got.shape == want.shape and len(want) > 10 and np.abs(got - want).max() < 1e-4
    dets = [(onnx.engine.detect(wav), torch_.engine.detect(wav))]
    assert dets[0][0] and [d["start"] for d in dets[0][0]] == [d["start"] for d in dets[0][1]]
