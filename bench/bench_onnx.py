"""ONNX vs PyTorch on ONE CPU core: real-time factor of detect and transcribe, side by side.

Each model is built at its default config size (``conf/model/*.yaml``: ``trigger_word``,
``trigger_word_embedding``, ``ctc``) with random weights (speed does not depend on training),
saved as a serving package, exported with :func:`seqflow.export.export_package` and run on
onnxruntime (``intra_op_num_threads=1``) next to the PyTorch serving class
(``torch.set_num_threads(1)``) on the same audio. PyTorch and ONNX runs alternate, and each row
reports the best of ``--repeats`` runs, so both sides see the same machine load.

Rows:
* ``detect``: ``detector.detect(wav)`` on one ``--seconds`` stream (the offline path).
* ``stream 20 ms``: the same audio pushed 320 samples at a time through ``detector.stream()``
  (skipped where the PyTorch detector has no ``stream``).
* ``transcribe``: ``transcribe_batch`` of ``--seconds`` of audio cut into 5-s utterances, with the
  default decoding (prefix beam search, beam 4: Python, identical on both sides) and greedy.

RTF = compute seconds / audio seconds (lower is faster); ratio = PyTorch time / ONNX time.

    .venv/bin/python bench/bench_onnx.py [--seconds 60] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from omegaconf import OmegaConf

from seqflow.config import load_config
from seqflow.export import export_package, load_export
from seqflow.families import get_family
from seqflow.models.speech_embedding import SpeechEmbeddingFrontEnd
from seqflow.serve.detector import load_detector, save_detector
from seqflow.serve.embedding_detector import load_embedding_detector, save_embedding_detector
from seqflow.serve.transcriber import load_transcriber, save_transcriber
from seqflow.text.tokenizers import CharTokenizer

SR = 16000


def audio(seconds: float, seed: int = 0) -> np.ndarray:
    """Noise floor plus tone bursts every ~0.4 s (speech-like level changes)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    x = 0.01 * rng.standard_normal(n)
    for c in np.arange(0.2, seconds, 0.4):
        x += np.exp(-0.5 * ((t - c) / 0.06) ** 2) * 0.3 * np.sin(2 * np.pi * rng.uniform(120, 900) * t)
    return x.astype(np.float32)


def packages(root: Path) -> dict[str, Path]:
    """Default-size random-init serving packages of the three models."""
    torch.manual_seed(0)
    out = {}
    cfg = load_config(["model=trigger_word"])
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    out["trigger_word"] = save_detector(root / "trigger_word", get_family(cfg).build_net(cfg), model_cfg, 0.5, 1.0)
    cfg = load_config(["model=trigger_word_embedding"])
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    out["trigger_word_embedding"] = save_embedding_detector(
        root / "trigger_word_embedding", get_family(cfg).build_net(cfg), model_cfg, SpeechEmbeddingFrontEnd(),
        0.5, 1.0)
    cfg = load_config(["model=ctc"])
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    tok = CharTokenizer.from_texts(["abcdefghijklmnopqrstuvwxyz '"])
    tok.save(root / "tok")
    net = get_family(cfg).build_net(cfg, tok.vocab_size)
    out["ctc"] = save_transcriber(root / "ctc", net, model_cfg, root / "tok")
    return out


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def side_by_side(torch_fn, onnx_fn, repeats: int) -> tuple[float, float]:
    """Best-of-``repeats`` seconds of each, the two alternating run by run."""
    torch_fn(), onnx_fn()  # warm-up (allocations, first-run kernels)
    t, o = [], []
    for _ in range(repeats):
        t.append(best(torch_fn, 1))
        o.append(best(onnx_fn, 1))
    return min(t), min(o)


def push_all(stream_factory, wav: np.ndarray, n: int = 320) -> int:
    s, count = stream_factory(), 0
    for i in range(0, len(wav), n):
        count += len(s.push(wav[i:i + n]))
    return count + len(s.flush())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="audio seconds per measurement")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    wav = audio(args.seconds)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-onnx-") as tmp:
        pk = packages(Path(tmp))
        for name, loader in (("trigger_word", load_detector), ("trigger_word_embedding", load_embedding_detector)):
            ref = loader(pk[name])
            det = load_export(export_package(pk[name], Path(tmp) / f"{name}-onnx"), threads=1)
            diff = float(np.max(np.abs(ref.scores(wav)[0] - det.scores(wav)[0])))
            t, o = side_by_side(lambda: ref.detect(wav), lambda: det.detect(wav), args.repeats)
            rows.append((name, "detect", t, o, diff))
            if hasattr(ref, "stream"):
                t, o = side_by_side(lambda: push_all(ref.stream, wav), lambda: push_all(det.stream, wav), args.repeats)
                rows.append((name, "stream 20 ms", t, o, diff))
        ref = load_transcriber(pk["ctc"])
        tr = load_export(export_package(pk["ctc"], Path(tmp) / "ctc-onnx"), threads=1)
        utts = [wav[i:i + 5 * SR] for i in range(0, len(wav) - SR, 5 * SR)]
        feats, lengths = ref.frontend.features_each(utts[:1])
        with torch.no_grad():
            diff = float(np.max(np.abs(ref.net(feats, lengths)[0][0].numpy() - tr.log_probs(utts[:1])[0])))
        beam = ref.decoding["beam_size"]
        t, o = side_by_side(lambda: ref.transcribe_batch(utts), lambda: tr.transcribe_batch(utts), args.repeats)
        rows.append(("ctc", f"transcribe (beam {beam})", t, o, diff))
        ref.decoding["beam_size"], tr.decoding["beam_size"] = 1, 1
        t, o = side_by_side(lambda: ref.transcribe_batch(utts), lambda: tr.transcribe_batch(utts), args.repeats)
        rows.append(("ctc", "transcribe (greedy)", t, o, diff))

    secs = len(wav) / SR
    print(f"\nONNX vs PyTorch, one CPU core, {secs:.0f} s of 16 kHz audio per run, best of {args.repeats} "
          f"(torch {torch.__version__}, onnxruntime {onnxruntime.__version__})\n")
    head = f"{'model':<24}{'task':<22}{'PyTorch s':>10}{'ONNX s':>9}{'PyTorch RTF':>13}{'ONNX RTF':>10}" \
           f"{'ratio':>8}{'max|diff|':>11}"
    print(head)
    print("-" * len(head))
    for name, task, t, o, diff in rows:
        print(f"{name:<24}{task:<22}{t:>10.3f}{o:>9.3f}{t / secs:>13.4f}{o / secs:>10.4f}{t / o:>7.2f}x{diff:>11.1e}")
    print("\nratio = PyTorch time / ONNX time (> 1: ONNX faster); max|diff|: step probabilities or CTC log-probs; "
          f"median ratio {statistics.median(t / o for _, _, t, o, _ in rows):.2f}x")


if __name__ == "__main__":
    main()
