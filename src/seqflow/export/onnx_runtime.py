"""Run exported models on onnxruntime with the public methods of the PyTorch classes.

* :class:`OnnxDetector` — as :class:`seqflow.serve.detector.TriggerWordDetector`: ``sample_rate``,
  ``threshold``, ``refractory_s``, ``scores(wav)``, ``scores_many(wavs)``, ``detect(wav,
  threshold=None)`` (the same :func:`seqflow.serve.detector.detect`), ``stream(threshold=None)``
  (a :class:`seqflow.serve.detection_stream.DetectionStream`: ``push(samples) -> detections``,
  ``flush()``; the GRU state is an input and an output of the graph).
* :class:`OnnxTranscriber` — as :class:`seqflow.serve.transcriber.Transcriber` for CTC:
  ``sample_rate``, ``transcribe(wav)``, ``transcribe_batch(wavs)`` (greedy or prefix beam search
  in Python on the ONNX log-probs, the same decoders as PyTorch), plus ``log_probs(wavs)``.

:func:`load_onnx_model` takes an export folder, or anything :func:`~seqflow.export.onnx_export.export_onnx`
takes (a ``models:/`` URI, a downloaded pyfunc folder, a serving package), exporting on the fly
into a cache folder keyed by the package's content.

>>> det = load_onnx_model("models:/seqflow-trigger-word-emb-activate@champion")   # doctest: +SKIP
>>> det.detect(wav)                        # [{"start": 3.07, "end": 3.31, "score": 0.93}]
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from seqflow.errors import ConfigError, SeqflowError
from seqflow.export.onnx_export import (CONFIG_FILE, FORMAT, MODEL_FILE, OPSET, export_package, is_uri,
                                       resolved_package)
from seqflow.serve.detector import detect

CACHE_ENV = "SEQFLOW_ONNX_CACHE"


def _session(path: Path, threads: int | None):
    """A CPU ``InferenceSession`` with ``threads`` intra-op threads (``None``: onnxruntime's default)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _mono(w) -> np.ndarray:
    x = np.asarray(w, dtype=np.float32)
    if x.ndim != 1:
        x = x.reshape(-1) if x.ndim == 2 and 1 in x.shape else None
        if x is None:
            raise ValueError(f"expected a mono waveform of shape (S,), got shape {np.shape(w)}")
    if not np.all(np.isfinite(x)):
        raise ValueError("waveform contains NaN or Inf samples")
    return x


class OnnxDetector:
    """Trigger-word scores and detections from an exported ``model.onnx`` (see the module doc).

    Step ``k`` is at ``first_step_end_s + k * step_s`` seconds (the end of its receptive field, as
    the PyTorch detector). Long audio is scored in chunks of ``chunk_steps`` steps with the GRU
    state carried, so memory stays bounded and scores equal one whole pass.

    Args:
        folder: the export folder. meta: its ``onnx_model.json`` (read when ``None``).
        threads: onnxruntime intra-op threads (``None``: its default).
    """

    def __init__(self, folder: str | os.PathLike, meta: dict | None = None, threads: int | None = None) -> None:
        self.folder = Path(folder)
        meta = meta or read_meta(self.folder)
        self.meta, self.session = meta, _session(self.folder / MODEL_FILE, threads)
        self.model = meta["model"]
        self.sample_rate = int(meta["sample_rate"])
        self.threshold, self.refractory_s = float(meta["threshold"]), float(meta["refractory_s"])
        fe, st = meta["frontend"], meta["steps"]
        self.n_fft, self.hop_length = int(fe["n_fft"]), int(fe["hop_length"])
        self.pad_mode = "reflect" if fe["pad"] == "reflect" else "constant"
        self.conv_kernel, self.conv_stride = int(st["kernel"]), int(st["stride"])
        self.step_s, self.first_step_end_s = float(st["step_s"]), float(st["first_step_end_s"])
        self.state_shape = (int(meta["state"]["layers"]), int(meta["state"]["hidden"]))
        self.chunk_steps = max(1, int(meta.get("chunk_steps", 1500)))
        self._half = self.n_fft // 2

    def num_steps(self, num_frames: int) -> int:
        """Output steps for ``num_frames`` feature frames: ``(T - kernel) // stride + 1`` (>= 0)."""
        return max(0, (int(num_frames) - self.conv_kernel) // self.conv_stride + 1)

    def _bounds(self, k0: int, k1: int) -> tuple[int, int]:
        """Stream samples ``[a, b)`` (may reach outside the stream) that steps ``[k0, k1)`` depend on."""
        return (k0 * self.conv_stride * self.hop_length - self._half,
                ((k1 - 1) * self.conv_stride + self.conv_kernel - 1) * self.hop_length + self._half)

    def _run(self, audio: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probs, h_n = self.session.run(["probs", "h_n"], {"audio": np.ascontiguousarray(audio, dtype=np.float32),
                                                         "h0": h})
        return probs, h_n

    def scores_many(self, wavs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Step probabilities ``(T'_i,)`` float32 of several streams scored as one batch (zero-padded
        at the end to the longest, as the PyTorch detector does)."""
        xs = [_mono(w) for w in wavs]
        totals = [self.num_steps(1 + len(x) // self.hop_length) for x in xs]
        total = max(totals, default=0)
        if total == 0:
            return [np.zeros(0, dtype=np.float32) for _ in xs]
        x = np.zeros((len(xs), max(len(w) for w in xs)), dtype=np.float32)
        for i, w in enumerate(xs):
            x[i, :len(w)] = w
        padded = np.pad(x, ((0, 0), (self._half, self._half)), mode=self.pad_mode)
        probs = np.zeros((len(xs), total), dtype=np.float32)
        h = np.zeros((self.state_shape[0], len(xs), self.state_shape[1]), dtype=np.float32)
        for k0 in range(0, total, self.chunk_steps):
            k1 = min(total, k0 + self.chunk_steps)
            a, b = self._bounds(k0, k1)
            probs[:, k0:k1], h = self._run(padded[:, a + self._half:b + self._half], h)
        return [probs[i, :t] for i, t in enumerate(totals)]

    def scores(self, wav: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Args: ``wav (S,)`` mono float at :attr:`sample_rate`.

        Returns: ``(probs (T',), step_times_s (T',))`` float32/float64 (empty below the receptive field).

        Raises:
            ValueError: not mono, or NaN/Inf samples.
        """
        probs = self.scores_many([wav])[0]
        k = np.arange(len(probs))
        times = (k * self.conv_stride + self.conv_kernel - 1) * (self.hop_length / self.sample_rate)
        return probs, times.astype(np.float64)

    def detect(self, wav: np.ndarray, threshold: float | None = None) -> list[dict]:
        """Detections ``[{"start", "end", "score"}]`` in seconds from the start of ``wav``
        (:func:`seqflow.serve.detector.detect` on :meth:`scores`)."""
        probs, _ = self.scores(wav)
        return detect(probs, self.step_s, self.threshold if threshold is None else threshold,
                      self.refractory_s, self.first_step_end_s)

    def stream(self, threshold: float | None = None):
        """A push-based :class:`~seqflow.serve.detection_stream.DetectionStream` over this detector
        (``push(float32 samples) -> detections``, ``flush()``); its probabilities equal
        :meth:`scores` of the concatenated pushes."""
        from seqflow.serve.detection_stream import DetectionStream

        return DetectionStream(self, threshold)

    # -- DetectionStream hooks -------------------------------------------------------------------

    def stream_steps_ready(self, num_samples: int, final: bool) -> int:
        """Steps whose every sample has arrived (``final``: all steps, the end padding included)."""
        total = self.num_steps(1 + num_samples // self.hop_length)
        if final:
            return total
        first_end = self._bounds(0, 1)[1]
        per_step = self.conv_stride * self.hop_length
        return 0 if num_samples < first_end else min(total, (num_samples - first_end) // per_step + 1)

    def stream_first_sample(self, k: int) -> int:
        """First sample (may be negative) that steps ``>= k`` depend on."""
        return self._bounds(k, k + 1)[0]

    def stream_probs(self, buf: np.ndarray, buf0: int, num_samples: int, k0: int, k1: int,
                     h: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities ``(k1 - k0,)`` of steps ``[k0, k1)`` from buffered samples ``buf`` (stream
        samples ``buf0 ..``) and the GRU state ``h`` (``None``: zeros); returns ``(probs, h_n)``.
        Outside the stream the piece is padded as offline scoring pads the whole stream."""
        a, b = self._bounds(k0, k1)
        lo, hi = max(0, a), min(num_samples, b)
        piece = np.pad(buf[lo - buf0:hi - buf0], (lo - a, b - hi), mode=self.pad_mode)
        if h is None:
            h = np.zeros((self.state_shape[0], 1, self.state_shape[1]), dtype=np.float32)
        probs, h = self._run(piece[None], h)
        return probs[0], h


class OnnxTranscriber:
    """CTC transcripts from an exported ``model.onnx`` and its ``tokenizer/`` (see the module doc).

    Args:
        folder: the export folder. meta: its ``onnx_model.json`` (read when ``None``).
        threads: onnxruntime intra-op threads (``None``: its default).
        decoding: overrides of the exported decoding settings (``beam_size``, ``token_prune``, ``batch_size``).
    """

    kind = "ctc"

    def __init__(self, folder: str | os.PathLike, meta: dict | None = None, threads: int | None = None,
                 decoding: dict | None = None) -> None:
        from seqflow.text.tokenizers import load_tokenizer

        self.folder = Path(folder)
        meta = meta or read_meta(self.folder)
        self.meta, self.session = meta, _session(self.folder / MODEL_FILE, threads)
        self.sample_rate = int(meta["sample_rate"])
        fe = meta["frontend"]
        self.n_fft, self.hop_length, self.min_samples = int(fe["n_fft"]), int(fe["hop_length"]), int(fe["min_samples"])
        self.max_frames = int(meta["max_frames"])
        self.tokenizer = load_tokenizer(self.folder / meta.get("tokenizer", "tokenizer"))
        self.decoding = {**meta["decoding"], **{k: v for k, v in (decoding or {}).items() if v is not None}}

    @property
    def max_seconds(self) -> float:
        """About the longest waveform the graph takes (its table of sinusoidal positions), in seconds."""
        return 4 * self.max_frames * self.hop_length / self.sample_rate

    def log_probs(self, wavs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """CTC log-probabilities ``(T'_i, V)`` float32 of waveforms ``(S_i,)`` run as ONE batch
        (each padded to ``min_samples``, reflect-padded on its own; features per utterance, so
        the result does not depend on the batch-mates).

        Raises:
            ValueError: empty list, a waveform not mono, NaN/Inf, or longer than :attr:`max_seconds`.
        """
        xs = [_mono(w) for w in wavs]
        if not xs:
            raise ValueError("no waveforms")
        xs = [np.pad(x, (0, max(0, self.min_samples - len(x)))) for x in xs]
        longest = max(len(x) for x in xs)
        if ((longest // self.hop_length) // 2 - 1) // 2 > self.max_frames:  # encoder frames T' of the longest
            raise ValueError(f"waveform of {longest / self.sample_rate:.1f} s is longer than the exported model's "
                             f"{self.max_seconds:.0f} s (its positional table); split the audio")
        half = self.n_fft // 2
        audio = np.zeros((len(xs), longest + 2 * half), dtype=np.float32)
        for i, x in enumerate(xs):
            audio[i, :len(x) + 2 * half] = np.pad(x, half, mode="reflect")
        lengths = np.array([len(x) for x in xs], dtype=np.int64)
        log_probs, n = self.session.run(["log_probs", "out_lengths"], {"audio": audio, "lengths": lengths})
        return [log_probs[i, :int(n[i])] for i in range(len(xs))]

    def transcribe(self, wav: np.ndarray) -> str:
        """Text of one waveform ``(S,)`` float32 at :attr:`sample_rate` (``""`` for empty audio)."""
        return self.transcribe_batch([wav])[0]

    def transcribe_batch(self, wavs: Sequence[np.ndarray], batch_size: int | None = None) -> list[str]:
        """Texts of several waveforms in input order, run in length-sorted batches of ``batch_size``
        (default ``decoding.batch_size``), decoded as the PyTorch transcriber decodes.

        Raises:
            ValueError: a waveform is not mono, holds NaN/Inf, or is longer than :attr:`max_seconds`.
        """
        import torch

        from seqflow.models.decoding import ctc_greedy_decode, ctc_prefix_beam_search

        xs = [_mono(w) for w in wavs]
        bs = max(1, int(batch_size or self.decoding.get("batch_size", 16)))
        beam, blank = int(self.decoding.get("beam_size", 1)), self.tokenizer.blank_id
        prune = int(self.decoding.get("token_prune", 16))
        out = [""] * len(xs)
        order = [i for i in sorted(range(len(xs)), key=lambda i: len(xs[i])) if len(xs[i]) > 0]
        for b0 in range(0, len(order), bs):
            idx = order[b0:b0 + bs]
            for i, lp in zip(idx, self.log_probs([xs[i] for i in idx])):
                t = torch.from_numpy(lp)
                ids = ctc_greedy_decode(t[None], torch.tensor([len(lp)]), blank=blank)[0] if beam <= 1 else \
                    ctc_prefix_beam_search(t, beam, blank=blank, token_prune=prune)[0][0]
                out[i] = self.tokenizer.decode(ids)
        return out


def read_meta(folder: str | os.PathLike) -> dict:
    """``onnx_model.json`` of an export folder.

    Raises:
        SeqflowError: ``model.onnx`` or ``onnx_model.json`` missing or unreadable (names the file).
        ConfigError: an export of another format version.
    """
    d = Path(folder)
    for p in (d / CONFIG_FILE, d / MODEL_FILE):
        if not p.is_file():
            raise SeqflowError(f"{p}: missing (not a seqflow ONNX export)")
    try:
        meta = json.loads((d / CONFIG_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise SeqflowError(f"{d / CONFIG_FILE}: unreadable ({exc})") from exc
    if meta.get("format") != FORMAT or meta.get("kind") not in ("detector", "transcriber"):
        raise ConfigError(f"{d / CONFIG_FILE}: not a format-{FORMAT} seqflow ONNX export")
    return meta


def load_export(folder: str | os.PathLike, meta: dict | None = None, threads: int | None = None
                ) -> OnnxDetector | OnnxTranscriber:
    """The runtime class for an export folder (detector or transcriber by its ``kind``)."""
    meta = meta or read_meta(folder)
    return (OnnxDetector if meta["kind"] == "detector" else OnnxTranscriber)(folder, meta, threads)


def _content_key(package: Path) -> str:
    """sha256 of every file in a serving package (relative path and bytes) plus the export format."""
    h = hashlib.sha256(f"seqflow-onnx-{FORMAT}-opset{OPSET}".encode())
    for p in sorted(q for q in package.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(package)).encode() + b"\0")
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:24]


def default_cache_dir() -> Path:
    """``$SEQFLOW_ONNX_CACHE``, else ``~/.cache/seqflow/onnx``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "seqflow" / "onnx")


def load_onnx_model(source: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                    threads: int | None = None) -> OnnxDetector | OnnxTranscriber:
    """An onnxruntime model from an export folder, or from a ``models:/…``/``runs:/…`` URI, a
    downloaded pyfunc folder or a serving package (exported on the fly into
    ``cache_dir/<content hash>``, default :func:`default_cache_dir`, and reused next time).

    Raises:
        SeqflowError / ConfigError / ExportError: as :func:`~seqflow.export.onnx_export.export_onnx`
        and :func:`read_meta`.
    """
    if not is_uri(source) and (Path(source) / CONFIG_FILE).is_file():
        return load_export(source, threads=threads)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    with resolved_package(source) as (package, provenance):
        out = cache / _content_key(package)
        if not (out / CONFIG_FILE).is_file():
            export_package(package, out, provenance, replace=False)
    return load_export(out, threads=threads)
