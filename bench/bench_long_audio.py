"""Long-audio benchmark: ``seqflow transcribe`` / ``seqflow detect`` on hours of audio in bounded
memory, side by side with the old whole-file path.

Synthesises speech-like audio quickly (one minute of espeak sentences in noise, repeated with
fresh noise) into temp FLACs (``--hours`` long, and ``--old-minutes`` long for the comparison),
builds the default-size models of ``conf/model/ctc.yaml`` and the default trigger-word model
(``conf/model/trigger_word_embedding.yaml``; ``--detector trigger_word`` for log-mel) with random
weights (time and memory do not depend on the weights), logs them into a temp MLflow store, and
runs, each in its own process (peak RSS from ``os.wait4``):

* new: ``seqflow transcribe FILE`` and ``seqflow detect FILE`` (block reader, windows / stream);
* old: the previous CLI path: the same pyfunc loaded from MLflow, ``read_audio`` of the whole
  file, then ``Transcriber.transcribe`` / ``TriggerWordDetector.detect`` on it in one call (what
  the pyfunc's ``predict`` did before).

Prints wall time, real-time factor (processing seconds per audio second) and peak RSS for each,
and old/new ratios at the same length.

    .venv/bin/python bench/bench_long_audio.py [--hours 2] [--old-minutes 10] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16000
SENTENCES = ["turn on the kitchen lights", "activate", "set a timer for ten minutes", "what is the weather",
             "activate the alarm", "play some music"]
OLD = """
import sys, torch, mlflow
torch.set_num_threads(int(sys.argv[4]))
from seqflow.audio.io import read_audio
mlflow.set_tracking_uri(sys.argv[5])
inner = mlflow.pyfunc.load_model(sys.argv[3]).unwrap_python_model()
wav, _ = read_audio(sys.argv[2], target_sr=16000)
if sys.argv[1] == "transcribe":
    print(len(inner.transcriber.transcribe(wav)))
else:
    print(len(inner.detector.detect(wav)))
"""


def speech_minute() -> np.ndarray:
    from seqflow.audio.resample import resample
    from seqflow.data.tts import EspeakTTS

    tts, rng = EspeakTTS(), np.random.default_rng(5)
    out = (0.01 * rng.standard_normal(60 * SR)).astype(np.float32)
    for i in range(12):
        wav, sr = tts.render(SENTENCES[i % len(SENTENCES)], voice=["en-us+f3", "en-gb+m3", "en-us+m1"][i % 3])
        wav = resample(wav, sr, SR)
        at = int((0.5 + 4.9 * i) * SR)
        out[at:at + len(wav)] += 0.4 * wav[:60 * SR - at]
    return out


def write_flac(path: Path, minutes: float, minute: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    with sf.SoundFile(path, "w", SR, 1, subtype="PCM_16") as f:
        left = int(round(minutes * 60 * SR))
        while left > 0:
            piece = minute[:left] + (0.003 * rng.standard_normal(min(left, len(minute)))).astype(np.float32)
            f.write(piece)
            left -= len(piece)


def build_models(root: Path, detector_kind: str) -> tuple[Path, Path]:
    """Default-size CTC transcriber and trigger-word detector (random weights) saved under ``root``."""
    import torch
    from omegaconf import OmegaConf

    from seqflow.config import load_config
    from seqflow.serve.transcriber import save_transcriber
    from seqflow.text.tokenizers import CharTokenizer

    torch.manual_seed(0)
    ctc_cfg = OmegaConf.to_container(load_config(["model=ctc"]).model, resolve=True)
    tok = CharTokenizer.from_texts(SENTENCES + ["the quick brown fox jumps over the lazy dog"])
    tok.save(root / "tok")
    from seqflow.models.ctc import CTCModel

    net_kw = {k: ctc_cfg["net"][k] for k in ("d_model", "num_heads", "num_layers", "d_ff", "dropout", "pre_ln")}
    net = CTCModel(int(ctc_cfg["features"]["n_mels"]), tok.vocab_size, **net_kw)
    tdir = save_transcriber(root / "transcriber", net, ctc_cfg, root / "tok")

    det_cfg = OmegaConf.to_container(load_config([f"model={detector_kind}"]).model, resolve=True)
    if detector_kind == "trigger_word":
        from seqflow.models.trigger_word import TriggerWordNet
        from seqflow.serve.detector import save_detector

        dnet = TriggerWordNet(int(det_cfg["features"]["n_mels"]), **det_cfg["net"])
        ddir = save_detector(root / "detector", dnet, det_cfg, threshold=0.5, refractory_s=1.0)
    else:
        from seqflow.models.speech_embedding import EmbeddingTriggerNet, build_front_end
        from seqflow.serve.embedding_detector import save_embedding_detector

        dnet = EmbeddingTriggerNet(**det_cfg["net"])
        ddir = save_embedding_detector(root / "detector", dnet, det_cfg, build_front_end(det_cfg.get("embedding")),
                                       threshold=0.5, refractory_s=1.0)
    return tdir, ddir


def log_models(root: Path, tdir: Path, ddir: Path, example: np.ndarray, detector_kind: str) -> tuple[str, str, str]:
    import mlflow

    from seqflow.tracking.pyfunc import log_asr_model, log_trigger_word_model
    from seqflow.tracking.pyfunc_embedding import log_embedding_trigger_word_model
    from seqflow.tracking.runs import setup_mlflow

    uri = f"sqlite:///{root}/mlflow.db"
    setup_mlflow(uri, root / "mlartifacts", "seqflow/bench-long-audio")
    log_det = log_trigger_word_model if detector_kind == "trigger_word" else log_embedding_trigger_word_model
    with mlflow.start_run():
        asr = log_asr_model(tdir, example, name="asr").model_uri
        kws = log_det(ddir, example, name="kws").model_uri
    return uri, asr, kws


def measure(cmd: list[str], env: dict) -> tuple[float, float, str]:
    """Wall seconds, peak RSS [MB] of the process, its output."""
    with tempfile.TemporaryFile() as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        out.seek(0)
        text = out.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{text[-3000:]}")
    return wall, usage.ru_maxrss / 1024, text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=2.0, help="length of the long file [h]")
    ap.add_argument("--old-minutes", type=float, default=10.0, help="length of the side-by-side file [min]")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process (OMP_NUM_THREADS)")
    ap.add_argument("--detector", default="trigger_word_embedding", choices=["trigger_word_embedding", "trigger_word"])
    ap.add_argument("--skip-old", action="store_true", help="only the new path")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-long-audio-"))
    minute = speech_minute()
    long_f, short_f = root / f"long-{args.hours:g}h.flac", root / f"short-{args.old_minutes:g}min.flac"
    t0 = time.perf_counter()
    write_flac(long_f, args.hours * 60, minute)
    write_flac(short_f, args.old_minutes, minute)
    print(f"audio: {long_f.name} ({long_f.stat().st_size / 1e6:.0f} MB FLAC) and {short_f.name}, "
          f"written in {time.perf_counter() - t0:.0f} s")
    tdir, ddir = build_models(root, args.detector)
    uri, asr, kws = log_models(root, tdir, ddir, minute[:SR], args.detector)
    exe = str(Path(sys.executable).with_name("seqflow"))
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))

    rows = []
    for command, model in (("transcribe", asr), ("detect", kws)):
        for f, minutes in ((short_f, args.old_minutes), (long_f, args.hours * 60)):
            wall, rss, _ = measure([exe, command, str(f), "--model", model, "--tracking-uri", uri], env)
            rows.append((command, "new (blocks)", minutes, wall, rss))
            print(f"  {rows[-1][0]:<10} {rows[-1][1]:<14} {minutes:7.1f} min  {wall:8.1f} s  {rss:8.0f} MB", flush=True)
        if not args.skip_old:
            wall, rss, _ = measure([sys.executable, "-c", OLD, command, str(short_f), model, str(args.threads), uri],
                                   env)
            rows.append((command, "old (whole)", args.old_minutes, wall, rss))
            print(f"  {command:<10} {'old (whole)':<14} {args.old_minutes:7.1f} min  {wall:8.1f} s  {rss:8.0f} MB",
                  flush=True)

    print(f"\n{'command':<11}{'path':<15}{'audio':>10}{'wall s':>10}{'RTF':>9}{'peak RSS MB':>13}")
    for command, path, minutes, wall, rss in rows:
        print(f"{command:<11}{path:<15}{minutes:>8.1f} m{wall:>10.1f}{wall / (minutes * 60):>9.4f}{rss:>13.0f}")
    if not args.skip_old:
        print(f"\nold / new at {args.old_minutes:g} min (same file, same MLflow model load):")
        for command in ("transcribe", "detect"):
            new = next(r for r in rows if r[0] == command and r[1].startswith("new") and r[2] == args.old_minutes)
            old = next(r for r in rows if r[0] == command and r[1].startswith("old"))
            print(f"  {command:<10} peak RSS {old[4]:.0f} / {new[4]:.0f} MB = {old[4] / new[4]:.2f}x   "
                  f"wall {old[3]:.1f} / {new[3]:.1f} s = {old[3] / new[3]:.2f}x")
    print(f"\n2-hour target: peak RSS < 2048 MB -> "
          + ", ".join(f"{r[0]} {r[4]:.0f} MB" for r in rows if r[2] == args.hours * 60))


if __name__ == "__main__":
    main()
