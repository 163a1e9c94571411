"""Export a trained trigger-word detector or CTC recognizer to ONNX (front end inside the graph).

>>> export_onnx("models:/seqflow-trigger-word-emb-activate@champion", "exports/activate")  # doctest: +SKIP
PosixPath('exports/activate')

Sources: a ``models:/<name>@<alias>`` / ``models:/<name>/<version>`` / ``runs:/...`` URI (the pyfunc
is downloaded from the current tracking store), a downloaded pyfunc model folder (with
``MLmodel``), or a serving package folder itself (``detector.json`` or ``transcriber.json``).

The export folder, written to a temporary sibling and renamed into place (an existing export
there is replaced only after the new one is complete):

* ``model.onnx`` — opset 17, TorchScript exporter (``dynamo=False``), dynamic batch and time axes.
  Detectors: inputs ``audio (B, N)`` float32 padded 16 kHz samples and ``h0 (L, B, H)`` GRU state;
  outputs ``probs (B, K)`` per-step trigger-word probability and ``h_n (L, B, H)``. CTC: inputs
  ``audio (B, N)``, ``lengths (B,)`` int64; outputs ``log_probs (B, T', V)``, ``out_lengths (B,)``
  (see :mod:`seqflow.export.graphs` for the padding convention).
* ``onnx_model.json`` — what the runtime needs: sample rate, padding and step geometry, threshold
  and refractory period (detectors), decoding settings (CTC), where it came from, and the check
  below.
* ``tokenizer/`` — CTC only, a copy of the model's tokenizer.

Every export is checked before it is published: onnxruntime and the PyTorch model score the same
seeded probe audio and the largest absolute difference (probabilities, or CTC log-probs) must be
below ``tolerance``; it is recorded as ``check.max_abs_diff``.

The Transformer recognizer's attention decoder is autoregressive and stays in PyTorch: asking to
export a ``transformer`` model raises :class:`ExportError` (export the ``ctc`` model instead).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seqflow.errors import ConfigError, SeqflowError
from seqflow.export.graphs import CTCGraph, DetectorGraph

log = logging.getLogger("seqflow.export")

FORMAT = 1
MODEL_FILE = "model.onnx"
CONFIG_FILE = "onnx_model.json"
TOKENIZER_DIR = "tokenizer"
OPSET = 17
TOLERANCE = 1e-3
PROBE_SECONDS = 3.0
FORMATS = ("onnx",)


class ExportError(SeqflowError):
    """The model cannot be exported (unsupported kind, failed trace, or ONNX disagrees with PyTorch)."""


# -- where the package comes from -------------------------------------------------------------------


def package_kind(package: Path) -> str:
    """``trigger_word``, ``trigger_word_embedding``, ``ctc`` or ``transformer`` of a serving package folder.

    Raises:
        SeqflowError: neither ``detector.json`` nor ``transcriber.json`` there, or unreadable.
    """
    for name in ("detector.json", "transcriber.json"):
        p = package / name
        if p.is_file():
            try:
                return str(json.loads(p.read_text())["model"])
            except (OSError, ValueError, KeyError) as exc:
                raise SeqflowError(f"{p}: unreadable ({exc})") from exc
    raise SeqflowError(f"{package}: not a seqflow serving package (no detector.json or transcriber.json)")


def _package_in(folder: Path) -> Path:
    """The package folder of a downloaded pyfunc (``artifacts/<one folder>``) or ``folder`` itself."""
    if (folder / "detector.json").is_file() or (folder / "transcriber.json").is_file():
        return folder
    if (folder / "MLmodel").is_file():
        from seqflow.tracking.artifacts import package_folder

        try:
            return package_folder(folder)
        except FileNotFoundError as exc:
            raise SeqflowError(str(exc)) from exc
    raise SeqflowError(f"{folder}: not a seqflow model (no MLmodel, detector.json or transcriber.json)")


def is_uri(source: str | os.PathLike) -> bool:
    """Whether ``source`` names an MLflow model (``models:/``, ``runs:/``, ``mlflow-artifacts:``, ...)."""
    s = str(source)
    return "://" in s or s.startswith(("models:", "runs:"))


@contextlib.contextmanager
def resolved_package(source: str | os.PathLike) -> Iterator[tuple[Path, dict]]:
    """Yield ``(package folder, provenance)`` for a URI (downloaded to a temporary folder, removed
    on exit) or a local folder. Provenance: ``uri`` and, for ``models:/`` URIs, registered
    ``name`` and ``version``.

    Raises:
        SeqflowError: a local path that does not exist or holds no seqflow model; a URI that
        cannot be resolved or downloaded (the message names it).
    """
    if not is_uri(source):
        folder = Path(source)
        if not folder.is_dir():
            raise SeqflowError(f"{folder}: no such model folder")
        yield _package_in(folder), {"path": str(folder.resolve())}
        return
    import mlflow

    uri, info = str(source), {"uri": str(source)}
    if uri.startswith("models:/"):
        from seqflow.tracking.registry import model_version

        try:
            mv = model_version(uri)
        except Exception as exc:  # noqa: BLE001 - MlflowException and friends: one line
            raise SeqflowError(f"{uri}: cannot resolve ({str(exc).splitlines()[0]})") from exc
        info.update(name=mv.name, version=int(mv.version), run_id=mv.run_id)
        uri = f"models:/{mv.name}/{mv.version}"  # the alias cannot move under us mid-export
    with tempfile.TemporaryDirectory(prefix="seqflow-export-") as tmp:
        try:
            local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=tmp))
        except Exception as exc:  # noqa: BLE001
            raise SeqflowError(f"{source}: cannot download ({str(exc).splitlines()[0]})") from exc
        yield _package_in(local), info


# -- tracing ------------------------------------------------------------------------------------------


def _trace(graph: torch.nn.Module, args: tuple, path: Path, input_names: list[str], output_names: list[str],
           dynamic_axes: dict, opset: int) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings about shape-dependent Python branches (see docs)
        try:
            torch.onnx.export(graph, args, str(path), dynamo=False, opset_version=opset, input_names=input_names,
                              output_names=output_names, dynamic_axes=dynamic_axes, do_constant_folding=True)
        except Exception as exc:  # noqa: BLE001 - the exporter raises many types
            raise ExportError(f"ONNX export of {type(graph.net).__name__} failed: {str(exc).splitlines()[0]}") from exc


def _probe(sample_rate: int, seconds: float = PROBE_SECONDS, seed: int = 0) -> np.ndarray:
    """Seeded check audio: noise floor plus tone bursts (non-trivial features, no silent frames)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    x = 0.01 * rng.standard_normal(n)
    for c in np.linspace(0.3, seconds - 0.3, 4):
        x += np.exp(-0.5 * ((t - c) / 0.1) ** 2) * 0.3 * np.sin(2 * np.pi * rng.uniform(150, 900) * t)
    return x.astype(np.float32)


def _export_detector(package: Path, kind: str, tmp: Path, opset: int) -> tuple[dict, Any]:
    if kind == "trigger_word_embedding":
        from seqflow.serve.embedding_detector import load_embedding_detector

        det = load_embedding_detector(package)
        front_end, pad = det.front_end, "zeros"
    else:
        from seqflow.serve.detector import load_detector

        det = load_detector(package)
        front_end, pad = det.logmel, "reflect"
    graph = DetectorGraph(det.net, front_end).eval()
    n_fft, hop = int(front_end.n_fft), int(det.hop_length)
    audio = torch.from_numpy(np.stack([_probe(det.sample_rate, 2.0, s) for s in (1, 2)]))
    audio = torch.nn.functional.pad(audio, (n_fft // 2, n_fft // 2))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.stft(return_complex=False) is deprecated, but it is what exports
        feats = graph.front_end.embed(graph.front_end.mel(audio, pad=(0, 0))) if graph.embedding \
            else graph.front_end(audio)
        _, h = det.net(feats, None)
    layers, hidden = int(h.shape[0]), int(h.shape[2])
    _trace(graph, (audio, torch.zeros(layers, 2, hidden)), tmp / MODEL_FILE, ["audio", "h0"], ["probs", "h_n"],
           {"audio": {0: "batch", 1: "samples"}, "h0": {1: "batch"}, "probs": {0: "batch", 1: "steps"},
            "h_n": {1: "batch"}}, opset)
    meta = {"kind": "detector", "model": kind, "sample_rate": int(det.sample_rate),
            "threshold": float(det.threshold), "refractory_s": float(det.refractory_s),
            "frontend": {"n_fft": n_fft, "hop_length": hop, "pad": pad},
            "steps": {"kernel": int(det.conv_kernel), "stride": int(det.conv_stride), "step_s": float(det.step_s),
                      "first_step_end_s": float(det.first_step_end_s)},
            "state": {"layers": layers, "hidden": hidden},
            "chunk_steps": int(det.chunk_steps),
            "io": {"inputs": {"audio": "(B, N) float32", "h0": "(L, B, H) float32"},
                   "outputs": {"probs": "(B, K) float32", "h_n": "(L, B, H) float32"}}}
    return meta, det


def _export_ctc(package: Path, tmp: Path, opset: int) -> tuple[dict, Any]:
    from seqflow.serve.transcriber import MIN_FRAMES, load_transcriber

    tr = load_transcriber(package)
    graph = CTCGraph(tr.net, tr.frontend).eval()
    n_fft, hop = int(tr.frontend.logmel.n_fft), int(tr.frontend.hop_length)
    wavs = [_probe(tr.sample_rate, s, i) for i, s in enumerate((2.0, 1.5))]
    n = max(len(w) for w in wavs) + n_fft
    audio = torch.zeros(2, n)
    for i, w in enumerate(wavs):
        audio[i, :len(w) + n_fft] = torch.from_numpy(np.pad(w, n_fft // 2, mode="reflect"))
    lengths = torch.tensor([len(w) for w in wavs], dtype=torch.long)
    _trace(graph, (audio, lengths), tmp / MODEL_FILE, ["audio", "lengths"], ["log_probs", "out_lengths"],
           {"audio": {0: "batch", 1: "samples"}, "lengths": {0: "batch"},
            "log_probs": {0: "batch", 1: "frames"}, "out_lengths": {0: "batch"}}, opset)
    tr.tokenizer.save(tmp / TOKENIZER_DIR)
    max_frames = int(tr.net.encoder.pos.pe.shape[0])  # positions in the graph's sinusoid table
    meta = {"kind": "transcriber", "model": "ctc", "sample_rate": int(tr.sample_rate),
            "frontend": {"n_fft": n_fft, "hop_length": hop, "pad": "reflect", "min_samples": (MIN_FRAMES - 1) * hop},
            "max_frames": max_frames,
            "vocab_size": int(tr.tokenizer.vocab_size), "blank_id": int(tr.tokenizer.blank_id),
            "decoding": dict(tr.decoding), "tokenizer": TOKENIZER_DIR,
            "io": {"inputs": {"audio": "(B, N) float32", "lengths": "(B,) int64"},
                   "outputs": {"log_probs": "(B, T', V) float32", "out_lengths": "(B,) int64"}}}
    return meta, tr


def _check(tmp: Path, meta: dict, reference: Any, tolerance: float) -> dict:
    """Score the probe with onnxruntime and with ``reference`` (the PyTorch model); raise past ``tolerance``."""
    from seqflow.export.onnx_runtime import load_export

    model = load_export(tmp, meta=meta)
    wav = _probe(meta["sample_rate"])
    if meta["kind"] == "detector":
        ref, got = reference.scores(wav)[0], model.scores(wav)[0]
    else:
        ref = _torch_log_probs(reference, wav)
        got = model.log_probs([wav])[0]
    if ref.shape != got.shape:
        raise ExportError(f"ONNX output shape {got.shape} differs from PyTorch {ref.shape} on the probe")
    diff = float(np.max(np.abs(ref - got))) if ref.size else 0.0
    if not diff <= tolerance:
        raise ExportError(f"ONNX differs from PyTorch by {diff:.3g} (> {tolerance:g}) on the probe audio")
    return {"max_abs_diff": diff, "probe_seconds": PROBE_SECONDS, "tolerance": tolerance,
            "compared": "step probabilities" if meta["kind"] == "detector" else "CTC log-probs"}


@torch.no_grad()
def _torch_log_probs(transcriber: Any, wav: np.ndarray) -> np.ndarray:
    """``(T', V)`` log-probs of the PyTorch transcriber for one waveform (as its ``transcribe`` computes them)."""
    feats, lengths = transcriber.frontend.features_each([wav])
    log_probs, n = transcriber.net(feats, lengths)
    return log_probs[0, :int(n[0])].numpy()


def default_out_dir(provenance: dict) -> Path:
    """``exports/<name>-v<version>`` for a registered model, ``exports/run-<id>`` for a run,
    ``exports/<folder>-onnx`` for a local folder (relative to the working directory)."""
    if provenance.get("name"):
        return Path("exports") / f"{provenance['name']}-v{provenance['version']}"
    uri = str(provenance.get("uri", ""))
    if uri.startswith("runs:/"):
        return Path("exports") / f"run-{uri[len('runs:/'):].split('/')[0][:12]}"
    return Path("exports") / f"{Path(provenance.get('path', uri)).name or 'model'}-onnx"


def export_onnx(source: str | os.PathLike, out_dir: str | os.PathLike | None = None, fmt: str = "onnx",
                opset: int = OPSET, tolerance: float = TOLERANCE) -> Path:
    """Export ``source`` (a model URI or folder, see the module doc) into ``out_dir``; returns it.

    Args:
        source: ``models:/<name>@<alias>`` (resolved to its version first), ``runs:/…``, a
            downloaded pyfunc folder or a serving package folder.
        out_dir: the export folder (created atomically; an existing export there is replaced);
            ``None``: :func:`default_out_dir`.
        fmt: ``"onnx"`` (the only format).
        opset: ONNX opset (>= 17 for the ``STFT`` operator).
        tolerance: largest allowed absolute difference between ONNX and PyTorch on the probe.

    Raises:
        ConfigError: unknown ``fmt`` or ``opset < 17``. SeqflowError: the source cannot be found,
        downloaded or loaded. ExportError: a ``transformer`` model (its attention decoder stays
        PyTorch), a failed trace, or an export that disagrees with PyTorch.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: supported formats are {', '.join(FORMATS)}")
    with resolved_package(source) as (package, provenance):
        return export_package(package, out_dir if out_dir is not None else default_out_dir(provenance), provenance,
                              opset=opset, tolerance=tolerance)


def export_package(package: Path, out_dir: str | os.PathLike, provenance: dict | None = None, opset: int = OPSET,
                   tolerance: float = TOLERANCE, replace: bool = True) -> Path:
    """Export the serving package folder ``package`` into ``out_dir`` (see :func:`export_onnx`);
    ``provenance`` is recorded as ``source`` in ``onnx_model.json``. ``replace=False`` keeps an
    export that appears at ``out_dir`` meanwhile (a cache entry another process just wrote)."""
    if opset < 17:
        raise ConfigError(f"opset {opset}: the log-mel STFT needs ONNX opset >= 17")
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    kind = package_kind(package)
    if kind == "transformer":
        raise ExportError("the Transformer recognizer's attention decoder stays PyTorch: only its encoder "
                          "could be exported; export a model=ctc recognizer instead")
    if kind not in ("trigger_word", "trigger_word_embedding", "ctc"):
        raise ExportError(f"{package}: model {kind!r} has no ONNX export")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        meta, reference = (_export_ctc(package, tmp, opset) if kind == "ctc"
                           else _export_detector(package, kind, tmp, opset))
        meta = {"format": FORMAT, **meta, "source": provenance or {"path": str(package)}, "opset": opset,
                "versions": {"torch": torch.__version__, "onnx": _version("onnx"),
                             "onnxruntime": _version("onnxruntime")}}
        meta["check"] = _check(tmp, meta, reference, tolerance)
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        _publish(tmp, out, replace)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("exported %s (%s) to %s: max |ONNX - PyTorch| %.2g on %.0f s of probe audio", provenance, kind, out,
             meta["check"]["max_abs_diff"], PROBE_SECONDS)
    return out


def _publish(tmp: Path, out: Path, replace: bool = True) -> None:
    """Rename the finished ``tmp`` folder to ``out``. An existing export at ``out`` is moved aside
    first and removed after (``replace``), or kept and ``tmp`` dropped (``replace=False``); anything
    else at ``out`` is refused, so nothing that is not an export is ever deleted."""
    if out.exists() and not (out / CONFIG_FILE).is_file():
        raise SeqflowError(f"{out}: exists and is not an ONNX export (refusing to replace it)")
    if out.exists() and replace:
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        out.rename(old / out.name)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
        return
    try:
        tmp.rename(out)
    except OSError:  # another process published the same export first
        if not (out / CONFIG_FILE).is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def _version(dist: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
