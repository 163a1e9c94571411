"""Serving latency of `seqflow serve`: REST p50/p95 for a 1-s and a 10-s clip (server vs the same
detector called in-process, side by side), and streaming latency from the end of a trigger word to
its detection event with 20-ms frames sent in real time.

    .venv/bin/python bench/bench_serve.py                      # the configured champion, project store
    .venv/bin/python bench/bench_serve.py --model models:/seqflow-trigger-word-emb-activate@champion \
        --tracking-uri sqlite:////work/runs/wd1/mlflow.db --requests 40

Streaming uses the held-out festival renders of the phrase alone (`eval-data/heldout_engine`, built by
the pipeline's prepare stage): each is placed after 1 s of silence and followed by 2.5 s of silence;
the word's end is where its audio falls below -40 dBFS for good. Prints one skip line when the model
or the audio is missing.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import requests
import soundfile as sf

SR = 16000
FRAME = 320  # 20 ms


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wav_bytes(wav: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wav, SR, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _pcts(xs: list[float]) -> tuple[float, float]:
    return float(np.percentile(xs, 50)), float(np.percentile(xs, 95))


def _start_server(model: str, uri: str, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    cmd = [str(Path(sys.executable).parent / "seqflow"), "serve", "--model", model, "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"seqflow serve exited {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200:
                return proc
        except requests.RequestException:
            pass
        time.sleep(0.5)
    sys.exit(f"seqflow serve not ready after 300 s: {log.read_text()[-2000:]}")


def _word_end(wav: np.ndarray, floor_db: float = -40.0) -> float:
    """Seconds to the last 10-ms frame above ``floor_db`` dBFS (RMS)."""
    hop = SR // 100
    frames = wav[: len(wav) // hop * hop].reshape(-1, hop)
    loud = np.flatnonzero(20 * np.log10(np.sqrt((frames ** 2).mean(axis=1)) + 1e-12) > floor_db)
    return float((loud[-1] + 1) * hop / SR) if loud.size else len(wav) / SR


def _phrase_clips(eval_data: Path, phrase: str, limit: int,
                  manifest: Path | None = None) -> list[tuple[np.ndarray, float]]:
    """The phrase spoken alone, 1 s of silence before and 2.5 s after, with the word's end [s].
    From ``manifest`` (NeMo JSONL; rows whose text is the phrase, test split only where rows name
    one, paths relative to the manifest) or else the held-out festival renders."""
    from seqflow.audio.io import read_audio
    from seqflow.config import slug

    manifest = manifest or eval_data / "heldout_engine" / slug(phrase) / "manifest.jsonl"
    if not manifest.is_file():
        return []
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r.get("text", "").strip().lower() == phrase.lower()
            and r.get("split", "test") == "test"][:limit]
    clips = []
    for r in rows:
        word = read_audio(manifest.parent / r["audio_filepath"], target_sr=SR)[0]
        lead, tail = np.zeros(SR, np.float32), np.zeros(int(2.5 * SR), np.float32)
        clips.append((np.concatenate([lead, word, tail]), 1.0 + _word_end(word)))
    return clips


def _stream_latency(base: str, wav: np.ndarray, word_end_s: float) -> tuple[float | None, float | None]:
    """(seconds from the wall time the word's last sample was sent to the first detection event,
    the event's ``start``), sending 20-ms frames in real time; (None, None) when nothing fired.
    The event's ``start`` minus the word's end is the model's own delay; the rest is the system's."""
    from websockets.sync.client import connect

    pcm = (np.clip(wav, -1, 1) * 32767).astype("<i2").tobytes()
    arrivals: list[tuple[float, dict]] = []
    with connect(base.replace("http://", "ws://") + "/v1/stream", open_timeout=30) as ws:
        json.loads(ws.recv(timeout=30))  # ready
        t0 = time.perf_counter()
        for i, k in enumerate(range(0, len(pcm), 2 * FRAME)):
            time.sleep(max(0.0, t0 + i * FRAME / SR - time.perf_counter()))
            ws.send(pcm[k:k + 2 * FRAME])
            try:
                while True:
                    arrivals.append((time.perf_counter(), json.loads(ws.recv(timeout=0))))
            except TimeoutError:
                pass
        ws.send(json.dumps({"type": "end"}))
        while True:
            event = json.loads(ws.recv(timeout=30))
            arrivals.append((time.perf_counter(), event))
            if event["type"] == "end":
                break
    hits = [(t, e) for t, e in arrivals if e["type"] == "detection" and e["start"] >= word_end_s - 1.0]
    if not hits:
        return None, None
    sent_end = t0 + word_end_s  # the frame holding the word's last sample left at about this time
    return hits[0][0] - sent_end, hits[0][1]["start"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="models:/<name>@<alias> (default: the configured champion)")
    ap.add_argument("--tracking-uri", default=None, help="default: MLFLOW_TRACKING_URI, else the config's store")
    ap.add_argument("--requests", type=int, default=30, help="REST requests per clip length")
    ap.add_argument("--stream-clips", type=int, default=6)
    ap.add_argument("--clips-manifest", type=Path, default=None,
                    help="NeMo JSONL with the phrase spoken alone (e.g. a corpus's data/manifest.jsonl: its "
                         "test-split positives); default: the held-out festival renders")
    args = ap.parse_args()

    import mlflow
    from mlflow.tracking import MlflowClient

    from seqflow.config import load_config

    cfg = load_config([])
    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or cfg.tracking.tracking_uri
    model = args.model or f"models:/{cfg.model.registered_name}@{cfg.tracking.champion_alias}"
    name, _, alias = model[len("models:/"):].partition("@")
    try:
        MlflowClient(uri, uri).get_model_version_by_alias(name, alias)
    except Exception as e:  # noqa: BLE001
        print(f"bench_serve: skipped: {model} not in {uri} ({str(e).splitlines()[0][:120]}); run the pipeline first")
        return
    mlflow.set_tracking_uri(uri)
    detector = mlflow.pyfunc.load_model(model).unwrap_python_model().detector
    import torch

    torch.set_num_threads(int(cfg.serve.concurrency.torch_threads or 1))  # as the server's model threads
    port = _free_port()
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_serve_{port}.log"
    proc = _start_server(model, uri, port, log)
    base = f"http://127.0.0.1:{port}"
    rng = np.random.default_rng(0)
    try:
        print(f"model {model} (MLflow {uri}); {args.requests} requests per clip; one client, sequential")
        print(f"{'clip':>6} {'server p50':>11} {'server p95':>11} {'in-process p50':>15} {'ratio p50':>10}")
        for seconds in (1.0, 10.0):
            wav = (0.05 * rng.standard_normal(int(seconds * SR))).astype(np.float32)
            body = _wav_bytes(wav)
            requests.post(f"{base}/v1/detect", data=body).raise_for_status()  # warm-up
            server, local = [], []
            for _ in range(args.requests):
                t = time.perf_counter()
                r = requests.post(f"{base}/v1/detect", data=body, headers={"Content-Type": "audio/wav"})
                server.append(time.perf_counter() - t)
                r.raise_for_status()
                t = time.perf_counter()
                detector.detect(wav)
                local.append(time.perf_counter() - t)
            (s50, s95), (l50, _) = _pcts(server), _pcts(local)
            print(f"{seconds:5.0f}s {s50 * 1e3:9.1f}ms {s95 * 1e3:9.1f}ms {l50 * 1e3:13.1f}ms {s50 / l50:9.2f}x")
        eval_data = Path(cfg.evaluate.eval_data)
        phrase = str(cfg.data.get("trigger_word") or "activate")
        clips = _phrase_clips(eval_data, phrase, args.stream_clips, args.clips_manifest)
        if not clips:
            print(f"streaming: skipped: no held-out renders of {phrase!r} under {eval_data}/heldout_engine")
            return
        lat, system, fired = [], [], 0
        for wav, end_s in clips:
            dt, start = _stream_latency(base, wav, end_s)
            if dt is not None:
                fired += 1
                lat.append(dt)
                system.append(dt - (start - end_s))
                print(f"  stream: word ends {end_s:.2f}s, event start {start:.2f}s (model delay "
                      f"{(start - end_s) * 1e3:.0f} ms); event arrived {dt * 1e3:.0f} ms after the word's last "
                      f"frame was sent, {system[-1] * 1e3:.0f} ms after the frame at its start")
        if lat:
            (p50, p95), (s50, s95) = _pcts(lat), _pcts(system)
            print(f"streaming (20-ms frames, real time): end of word -> event p50 {p50 * 1e3:.0f} ms, "
                  f"p95 {p95 * 1e3:.0f} ms ({fired}/{len(clips)} renders fired); of which the system "
                  f"(frame at the event's start -> event) p50 {s50 * 1e3:.0f} ms, p95 {s95 * 1e3:.0f} ms")
        else:
            print(f"streaming: none of {len(clips)} held-out renders fired at the model's threshold")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
