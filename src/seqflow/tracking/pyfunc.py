"""The trigger-word detector and the speech recognizers as MLflow pyfunc models (variable-length
audio in; detections or transcripts out).

Trigger word (:class:`TriggerWordPyfunc`, :func:`log_trigger_word_model`):

Input: one mono float32 waveform at the detector's sample rate (16 kHz), shape ``(S,)``.
Output: a pandas DataFrame, one row per detection, columns ``start`` [s], ``end`` [s],
``score`` (max probability in the detection); empty (same columns) when nothing fires.
Optional param ``threshold`` (float) overrides the detector's stored threshold per call.

>>> with mlflow.start_run():
...     info = log_trigger_word_model("work/detector", wav[:16000])
>>> m = mlflow.pyfunc.load_model("models:/seqflow-trigger-word-activate@champion")
>>> m.predict(wav)                       # DataFrame[start, end, score]
>>> # REST (mlflow models serve): POST /invocations {"inputs": [0.0, 0.01, ...], "params": {"threshold": 0.6}}

Speech recognition (:class:`TranscriberPyfunc`, :func:`log_asr_model`): input one mono float32
waveform ``(S,)`` at 16 kHz, or several (a list of arrays, an ``(N, S)`` array, or a DataFrame
column whose cells are waveforms); output a DataFrame with one ``text`` column, one row per waveform.

>>> m = mlflow.pyfunc.load_model("models:/seqflow-asr-ctc@champion")
>>> m.predict([wav_a, wav_b])["text"].tolist()   # ['turn off the lights', 'set a timer']

The classes live in the installed ``seqflow`` package (not ``__main__``), so loading needs
``seqflow`` importable; the model's pip requirements name it with torch/numpy/pandas/mlflow.

Models are logged as MLflow *models-from-code* (:func:`model_code_file`): the model folder holds a
three-line ``seqflow_model.py`` that imports the wrapper class and calls ``mlflow.models.set_model``,
the package folder as artifacts and no pickled Python object (no ``python_model.pkl``); the
package's weights load with ``torch.load(weights_only=True)``. Versions logged before this as a
cloudpickled wrapper still load (MLflow's own loader unpickles them; see docs/security.md).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import tempfile
from pathlib import Path
from typing import Any, Iterator

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

from seqflow.errors import ConfigError
from seqflow.serve.detector import load_detector
from seqflow.serve.transcriber import load_transcriber

COLUMNS = ("start", "end", "score")
MAX_EXAMPLE_S = 1.0  # the logged input example is cut to this many seconds


def _empty_frame() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype="float64") for c in COLUMNS})


def to_waveform(model_input: Any) -> np.ndarray:
    """Coerce a pyfunc input to one mono waveform ``(S,)`` float32.

    Accepted (lenient, one waveform per call): a 1-D numpy array or list of floats; a 2-D array
    of shape ``(1, S)`` or ``(S, 1)``; a pandas DataFrame with one row or one column of floats,
    or a single cell holding the whole waveform (list/array); a one-entry dict of any of these.

    Raises:
        ValueError: more than one waveform (several rows *and* columns), non-numeric values,
        or NaN/Inf samples (the message says which).
    """
    x = model_input
    if isinstance(x, dict) and len(x) == 1:  # a named tensor input {"waveform": [...]}
        x = next(iter(x.values()))
    if isinstance(x, pd.Series):
        x = x.to_frame()
    if isinstance(x, pd.DataFrame):
        if x.shape == (1, 1) and isinstance(x.iat[0, 0], (list, tuple, np.ndarray)):
            x = x.iat[0, 0]
        elif x.shape[0] == 1 or x.shape[1] == 1:
            x = x.to_numpy()
        else:
            raise ValueError(
                f"expected one waveform (one row or one column), got a DataFrame of shape {x.shape}"
            )
    try:
        arr = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise ValueError(f"waveform must be numeric float samples: {e}") from e
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise ValueError(f"expected one mono waveform of shape (S,), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("waveform contains NaN or Inf samples")
    return arr


class TriggerWordPyfunc(mlflow.pyfunc.PythonModel):
    """MLflow wrapper around :class:`seqflow.serve.detector.TriggerWordDetector`.

    Artifacts: ``"detector"`` → a folder written by ``save_detector`` (weights.pt, detector.json).
    """

    def load_context(self, context) -> None:
        """Load the detector from ``context.artifacts["detector"]`` (CPU)."""
        self.detector = load_detector(context.artifacts["detector"])

    def predict(self, context, model_input: np.ndarray, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Detections for one waveform ``(S,)`` at ``self.detector.sample_rate`` Hz.

        Args:
            model_input: see :func:`to_waveform`.
            params: optional ``{"threshold": float}``; default the detector's own threshold.
        Returns:
            DataFrame with float columns ``start``, ``end`` (seconds from the start of the
            waveform) and ``score`` (probability); no rows when nothing is detected or the audio
            is shorter than the model's receptive field.
        Raises:
            ValueError: see :func:`to_waveform`.
        """
        wav = to_waveform(model_input)
        threshold = None
        if params and params.get("threshold") is not None:
            threshold = float(params["threshold"])
        detections = self.detector.detect(wav, threshold=threshold)
        if not detections:
            return _empty_frame()
        return pd.DataFrame([[float(d[c]) for c in COLUMNS] for d in detections], columns=list(COLUMNS))


def _pip_requirements() -> list[str]:
    """Exact versions of what the wrapper imports; ``seqflow`` itself must be installed too."""
    reqs = []
    for dist in ("mlflow", "torch", "numpy", "pandas", "seqflow"):
        try:
            reqs.append(f"{dist}=={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            reqs.append(dist)
    return reqs


MODEL_CODE_NAME = "seqflow_model.py"  # the models-from-code file inside every logged model folder


@contextlib.contextmanager
def model_code_file(python_model: mlflow.pyfunc.PythonModel) -> Iterator[str]:
    """A temporary MLflow models-from-code file for ``python_model``'s class: it imports the class
    from its module and passes a fresh instance to ``mlflow.models.set_model``. Yields its path
    (pass it as ``python_model=`` to ``mlflow.pyfunc.log_model``, which copies it into the model).

    Raises:
        ConfigError: the class is not importable by module and name (defined in ``__main__``
            or inside a function), so a loader could not rebuild it from code.
    """
    cls = type(python_model)
    module, name = cls.__module__, cls.__qualname__
    if module == "__main__" or "<locals>" in name or "." in name:
        raise ConfigError(f"pyfunc class {module}.{name}: must be a top-level class of an importable module "
                          "to be logged as a model from code")
    code = (f'"""MLflow models-from-code file written by seqflow: the wrapper is rebuilt from the installed\n'
            f'package, never unpickled."""\nimport mlflow.models\n\nfrom {module} import {name}\n\n'
            f"mlflow.models.set_model({name}())\n")
    with tempfile.TemporaryDirectory(prefix="seqflow-model-code-") as tmp:
        path = Path(tmp) / MODEL_CODE_NAME
        path.write_text(code)
        yield str(path)


def log_trigger_word_model(detector_dir: str | Path, input_example_wav: np.ndarray, name: str = "model"):
    """Log the detector in ``detector_dir`` as a pyfunc model into the active run.

    Args:
        detector_dir: folder from ``save_detector`` (copied into the model's artifacts).
        input_example_wav: ``(S,)`` float32 waveform at the detector's sample rate; the first
            ``MAX_EXAMPLE_S`` seconds are stored as the input example (MLflow runs it once).
        name: model name within the run.
    Returns:
        ``mlflow.models.model.ModelInfo``; ``.model_uri`` is ``models:/m-<id>`` (register that).
    Raises:
        SeqflowError / ConfigError: ``detector_dir`` is not a loadable detector (from
        ``load_detector``, checked before logging). ValueError: bad example waveform.
    """
    return log_detector_model(load_detector(detector_dir), detector_dir, TriggerWordPyfunc(), input_example_wav,
                              name, {"seqflow.model": "trigger_word"})


def log_detector_model(detector, detector_dir: str | Path, python_model, input_example_wav: np.ndarray,
                       name: str, metadata: dict):
    """Log a loaded trigger-word ``detector`` (any family) as ``python_model``'s class, from code
    (:func:`model_code_file`), with the package folder as its ``detector`` artifact: one waveform
    in, detections out, ``threshold`` param."""
    example = to_waveform(input_example_wav)[: int(MAX_EXAMPLE_S * detector.sample_rate)]
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1,))]),
        outputs=Schema([ColSpec("double", c) for c in COLUMNS]),
        params=ParamSchema([ParamSpec("threshold", "double", float(detector.threshold))]),
    )
    with model_code_file(python_model) as code:
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=code,
            artifacts={"detector": str(Path(detector_dir).resolve())},
            signature=signature,
            input_example=example,
            pip_requirements=_pip_requirements(),
            metadata={"sample_rate": int(detector.sample_rate), "threshold": float(detector.threshold),
                      "refractory_s": float(detector.refractory_s), "output_columns": list(COLUMNS), **metadata},
        )


TEXT_COLUMN = "text"


def _is_waveform_cell(x: Any) -> bool:
    return isinstance(x, (list, tuple, np.ndarray))


def to_waveforms(model_input: Any) -> list[np.ndarray]:
    """Coerce a pyfunc input to a list of mono waveforms ``(S_i,)`` float32 (possibly of different lengths).

    Accepted: one waveform (a 1-D array or list of floats, a ``(1, S)``/``(S, 1)`` array); several
    (a list/tuple of arrays or lists, an object array of arrays, an ``(N, S)`` array with N, S > 1);
    a pandas DataFrame/Series whose cells hold waveforms (first such column, one row each) or one
    row/column of floats (one waveform); a one-entry dict of any of these.

    Raises:
        ValueError: non-numeric values, a waveform that is not 1-D, or NaN/Inf samples.
    """
    x = model_input
    if isinstance(x, dict) and len(x) == 1:
        x = next(iter(x.values()))
    if isinstance(x, pd.Series):
        x = x.to_frame()
    if isinstance(x, pd.DataFrame):
        for col in x.columns:
            if len(x) and all(_is_waveform_cell(v) for v in x[col]):
                return [to_waveform(v) for v in x[col]]
        if x.shape[0] > 1 and x.shape[1] > 1:
            return [to_waveform(row) for row in x.to_numpy()]
        return [to_waveform(x)]
    if isinstance(x, np.ndarray) and x.dtype == object:
        return [to_waveform(v) for v in x.reshape(-1)] if x.size and _is_waveform_cell(x.reshape(-1)[0]) \
            else [to_waveform(x.astype(np.float32))]
    if isinstance(x, (list, tuple)):
        if len(x) and _is_waveform_cell(x[0]):
            return [to_waveform(v) for v in x]
        return [to_waveform(x)]
    arr = np.asarray(x)
    if arr.ndim == 2 and arr.shape[0] > 1 and arr.shape[1] > 1:
        return [to_waveform(row) for row in arr]
    return [to_waveform(arr)]


class TranscriberPyfunc(mlflow.pyfunc.PythonModel):
    """MLflow wrapper around :class:`seqflow.serve.transcriber.Transcriber` (CTC or Transformer).

    Artifacts: ``"transcriber"`` → a folder written by ``save_transcriber`` (weights.pt,
    transcriber.json, tokenizer/).
    """

    def load_context(self, context) -> None:
        """Load the transcriber from ``context.artifacts["transcriber"]`` (CPU)."""
        self.transcriber = load_transcriber(context.artifacts["transcriber"])

    def predict(self, context, model_input, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Transcripts of one or several waveforms at ``self.transcriber.sample_rate`` Hz.

        Args:
            model_input: see :func:`to_waveforms`.
        Returns:
            DataFrame with a string column ``text`` (normalised: lower-case words), one row per
            waveform in input order (``""`` for empty audio). A waveform longer than the
            transcriber's ``decoding.window_s`` (20 s) is transcribed in overlapping windows and
            joined (:meth:`Transcriber.transcribe_long`), so compute memory stays bounded
            whatever its length (the input array itself is the caller's).
        Raises:
            ValueError: see :func:`to_waveforms`.
        """
        texts = self.transcriber.transcribe_any(to_waveforms(model_input))
        return pd.DataFrame({TEXT_COLUMN: pd.Series(texts, dtype=object)})


def log_asr_model(transcriber_dir: str | Path, input_example_wav: np.ndarray, name: str = "model"):
    """Log the transcriber in ``transcriber_dir`` as a pyfunc model into the active run.

    The signature declares the output (``text``: string) and no input schema, because MLflow's
    schemas cannot express "one waveform, or several of different lengths"; :func:`to_waveforms`
    checks inputs instead (clear ValueErrors). REST: ``{"inputs": [0.0, ...]}`` for one waveform,
    ``{"dataframe_records": [{"waveform": [...]}, ...]}`` for several.

    Args:
        transcriber_dir: folder from ``save_transcriber`` (copied into the model's artifacts).
        input_example_wav: ``(S,)`` float32 waveform at 16 kHz; the first ``MAX_EXAMPLE_S``
            seconds are stored as the input example.
        name: model name within the run.
    Returns:
        ``mlflow.models.model.ModelInfo``; ``.model_uri`` is ``models:/m-<id>`` (register that).
    Raises:
        SeqflowError / ConfigError: ``transcriber_dir`` is not loadable (checked before logging).
        ValueError: bad example waveform.
    """
    transcriber = load_transcriber(transcriber_dir)
    example = to_waveform(input_example_wav)[: int(MAX_EXAMPLE_S * transcriber.sample_rate)]
    signature = ModelSignature(inputs=None, outputs=Schema([ColSpec("string", TEXT_COLUMN)]))
    with model_code_file(TranscriberPyfunc()) as code:
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=code,
            artifacts={"transcriber": str(Path(transcriber_dir).resolve())},
            signature=signature,
            input_example=example,
            pip_requirements=_pip_requirements(),
            metadata={
                "seqflow.model": transcriber.kind, "sample_rate": int(transcriber.sample_rate),
                "input": "mono float32 waveform(s) at sample_rate: (S,), a list of them, or a DataFrame column",
                "output_columns": [TEXT_COLUMN], "decoding": dict(transcriber.decoding),
                "vocab_size": int(transcriber.tokenizer.vocab_size),
            },
        )
