"""Effect of the serving VAD gate (`serve.vad`, silero-vad) on false accepts per hour, side by side.

The registered trigger-word model scores real audio it never trained on at its stored threshold,
without and with the gate (:class:`seqflow.serve.vad.VadGate`, the rule the server applies):

* false accepts per hour on `real_speech_negatives` and `real_noise` (utterances joined in manifest
  order into continuous ~10-minute streams, as the evaluation joins them);
* detection of the phrase in the held-out festival renders (`heldout_engine`, each alone with 1 s of
  silence either side, as the evaluation scores positives) and the sound-alike trigger rate there.

    .venv/bin/python bench/bench_vad_gate.py
    .venv/bin/python bench/bench_vad_gate.py --model models:/seqflow-trigger-word-emb-activate@champion \
        --tracking-uri sqlite:////work/runs/wd1/mlflow.db --half all

Prints one skip line when the model or the evaluation audio is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

SR = 16000
STREAM_S = 600.0


def _rows(manifest: Path, half: str) -> list[dict]:
    from seqflow.evaluate.sets import assign_half

    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    return rows if half == "all" else [r for r in rows if assign_half(r) == half]


def _streams(rows: list[dict]):
    from seqflow.audio.io import read_audio

    buf, n = [], 0
    for r in rows:
        w = read_audio(r["audio_filepath"], target_sr=SR)[0]
        buf.append(w)
        n += len(w)
        if n >= STREAM_S * SR:
            yield np.concatenate(buf)
            buf, n = [], 0
    if buf:
        yield np.concatenate(buf)


def _dets(detector, probs: np.ndarray, threshold: float) -> list[dict]:
    from seqflow.serve.detector import detect

    return detect(probs, detector.step_s, threshold, detector.refractory_s, detector.first_step_end_s)


def _fire(detector, gate, wavs, thresholds) -> dict[float, tuple[int, int]]:
    """Per threshold: (detections without the gate, with it) over ``wavs`` (each scored once)."""
    out = {t: [0, 0] for t in thresholds}
    for w in wavs:
        probs = detector.scores(w)[0]
        for t in thresholds:
            dets = _dets(detector, probs, t)
            out[t][0] += len(dets)
            out[t][1] += len(gate.filter(w, dets))
    return {t: (a, b) for t, (a, b) in out.items()}


def _alone(detector, gate, rows, thresholds) -> dict[float, tuple[int, int]]:
    """Per threshold: (rows firing without the gate, with it), each alone with 1 s of silence either side."""
    from seqflow.audio.io import read_audio

    pad = np.zeros(SR, np.float32)
    out = {t: [0, 0] for t in thresholds}
    for r in rows:
        w = np.concatenate([pad, read_audio(r["audio_filepath"], target_sr=SR)[0], pad])
        probs = detector.scores(w)[0]
        for t in thresholds:
            dets = _dets(detector, probs, t)
            out[t][0] += bool(dets)
            out[t][1] += bool(gate.filter(w, dets))
    return {t: (a, b) for t, (a, b) in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="models:/<name>@<alias> (default: the configured champion)")
    ap.add_argument("--tracking-uri", default=None, help="default: MLFLOW_TRACKING_URI, else the config's store")
    ap.add_argument("--half", default="all", choices=["all", "dev", "eval"], help="set half scored (default both)")
    ap.add_argument("--thresholds", default="model,0.9,0.5",
                    help="comma-separated detection thresholds; 'model' is the model's calibrated one")
    args = ap.parse_args()

    import mlflow
    import torch

    from seqflow.config import load_config, slug
    from seqflow.evaluate.on_sets import contains_phrase
    from seqflow.serve.vad import VadGate

    cfg = load_config([])
    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or cfg.tracking.tracking_uri
    model = args.model or f"models:/{cfg.model.registered_name}@{cfg.tracking.champion_alias}"
    eval_data = Path(cfg.evaluate.eval_data)
    sets = {s: eval_data / s / "manifest.jsonl" for s in ("real_speech_negatives", "real_noise")}
    missing = [str(p) for p in sets.values() if not p.is_file()]
    if missing:
        print(f"bench_vad_gate: skipped: no evaluation audio ({', '.join(missing)}); run make eval-data")
        return
    mlflow.set_tracking_uri(uri)
    try:
        detector = mlflow.pyfunc.load_model(model).unwrap_python_model().detector
    except Exception as e:  # noqa: BLE001
        print(f"bench_vad_gate: skipped: cannot load {model} from {uri} ({str(e).splitlines()[0][:120]})")
        return
    torch.set_num_threads(int(cfg.serve.concurrency.torch_threads or 1))
    v = cfg.serve.vad
    gate = VadGate(float(v.threshold), float(v.lookback_s), float(v.warmup_s))
    phrase = str(cfg.data.get("trigger_word") or "activate")
    ths = [float(detector.threshold) if t.strip() == "model" else float(t) for t in args.thresholds.split(",")]
    print(f"model {model}, calibrated threshold {detector.threshold:.4g}; gate: silero-vad p >= {v.threshold} within "
          f"{v.lookback_s} s before each detection (warm-up {v.warmup_s} s); half: {args.half}")
    print(f"{'set':<24} {'threshold':>9} {'hours':>6} {'FA':>5} {'FA/h':>7} {'FA gated':>9} {'FA/h gated':>11} "
          f"{'ratio':>6}")
    for name, manifest in sets.items():
        rows = [r for r in _rows(manifest, args.half)
                if not r.get("confusable") and not contains_phrase(r.get("text", ""), phrase)]
        hours = sum(float(r["duration"]) for r in rows) / 3600.0
        t = time.perf_counter()
        for th, (raw, kept) in _fire(detector, gate, _streams(rows), ths).items():
            ratio = f"{kept / raw:.2f}" if raw else "n/a"
            print(f"{name:<24} {th:9.4g} {hours:6.2f} {raw:5d} {raw / hours:7.2f} {kept:9d} {kept / hours:11.2f} "
                  f"{ratio:>6}")
        print(f"  ({time.perf_counter() - t:.0f} s)")
    held = eval_data / "heldout_engine" / slug(phrase) / "manifest.jsonl"
    if held.is_file():
        rows = _rows(held, args.half)
        pos = [r for r in rows if contains_phrase(r.get("text", ""), phrase)]
        conf = [r for r in rows if r.get("confusable") and not contains_phrase(r.get("text", ""), phrase)]
        for label, subset in (("detected (phrase)", pos), ("sound-alikes firing", conf)):
            if not subset:
                continue
            for th, (raw, kept) in _alone(detector, gate, subset, ths).items():
                print(f"heldout_engine {label:<20} at {th:.4g}: {raw}/{len(subset)} = {raw / len(subset):.3f} "
                      f"without the gate, {kept}/{len(subset)} = {kept / len(subset):.3f} with it")
    else:
        print(f"heldout_engine: skipped: {held} missing")


if __name__ == "__main__":
    main()
