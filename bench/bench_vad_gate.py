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


def _fire(detector, gate, wavs) -> tuple[int, int]:
    """(detections without the gate, with it) over ``wavs``."""
    raw = kept = 0
    for w in wavs:
        dets = detector.detect(w)
        raw += len(dets)
        kept += len(gate.filter(w, dets))
    return raw, kept


def _alone(detector, gate, rows) -> tuple[int, int]:
    """(rows firing without the gate, with it), each scored alone with 1 s of silence either side."""
    from seqflow.audio.io import read_audio

    pad = np.zeros(SR, np.float32)
    raw = kept = 0
    for r in rows:
        w = np.concatenate([pad, read_audio(r["audio_filepath"], target_sr=SR)[0], pad])
        dets = detector.detect(w)
        raw += bool(dets)
        kept += bool(gate.filter(w, dets))
    return raw, kept


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="models:/<name>@<alias> (default: the configured champion)")
    ap.add_argument("--tracking-uri", default=None, help="default: MLFLOW_TRACKING_URI, else the config's store")
    ap.add_argument("--half", default="all", choices=["all", "dev", "eval"], help="set half scored (default both)")
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
    print(f"model {model} at threshold {detector.threshold:.4g}; gate: silero-vad p >= {v.threshold} within "
          f"{v.lookback_s} s before each detection (warm-up {v.warmup_s} s); half: {args.half}")
    print(f"{'set':<24} {'hours':>6} {'FA':>5} {'FA/h':>7} {'FA gated':>9} {'FA/h gated':>11} {'ratio':>6}")
    for name, manifest in sets.items():
        rows = [r for r in _rows(manifest, args.half)
                if not r.get("confusable") and not contains_phrase(r.get("text", ""), phrase)]
        hours = sum(float(r["duration"]) for r in rows) / 3600.0
        t = time.perf_counter()
        raw, kept = _fire(detector, gate, _streams(rows))
        ratio = f"{kept / raw:.2f}" if raw else "n/a"
        print(f"{name:<24} {hours:6.2f} {raw:5d} {raw / hours:7.2f} {kept:9d} {kept / hours:11.2f} {ratio:>6}"
              f"   ({time.perf_counter() - t:.0f} s)")
    held = eval_data / "heldout_engine" / slug(phrase) / "manifest.jsonl"
    if held.is_file():
        rows = _rows(held, args.half)
        pos = [r for r in rows if contains_phrase(r.get("text", ""), phrase)]
        conf = [r for r in rows if r.get("confusable") and not contains_phrase(r.get("text", ""), phrase)]
        for label, subset in (("detected (phrase)", pos), ("sound-alikes firing", conf)):
            raw, kept = _alone(detector, gate, subset)
            if subset:
                print(f"heldout_engine {label:<20} {raw}/{len(subset)} = {raw / len(subset):.3f} without the gate, "
                      f"{kept}/{len(subset)} = {kept / len(subset):.3f} with it")
    else:
        print(f"heldout_engine: skipped: {held} missing")


if __name__ == "__main__":
    main()
