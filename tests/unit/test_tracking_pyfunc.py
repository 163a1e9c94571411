"""Trigger-word pyfunc: log a real (untrained) detector, register it, load by alias, predict."""

from __future__ import annotations


import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from seqflow.models.trigger_word import TriggerWordNet
from seqflow.serve.detector import save_detector
from seqflow.tracking.pyfunc import COLUMNS, log_trigger_word_model, to_waveform
from seqflow.tracking.registry import register_and_promote
from _mlflow_store import mlflow_store

NAME = "seqflow-trigger-word"
SR = 16000
MODEL_CFG = {
    "features": {"sample_rate": SR, "n_fft": 512, "win_length": 400, "hop_length": 160, "n_mels": 40},
    "net": {"conv_channels": 8, "conv_kernel": 15, "conv_stride": 4, "gru_hidden": 8,
            "gru_layers": 1, "dropout": 0.0},
}


def _wav(seconds: float, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """Detector (threshold 0 → an untrained net always fires) logged, registered, aliased."""
    root = tmp_path_factory.mktemp("pyfunc")
    with mlflow_store(root, "seqflow/trigger_word"):
        torch.manual_seed(0)
        net = TriggerWordNet(40, conv_channels=8, conv_kernel=15, conv_stride=4, gru_hidden=8,
                             gru_layers=1, dropout=0.0)
        det_dir = save_detector(root / "detector", net, MODEL_CFG, threshold=0.0, refractory_s=1.0)
        with mlflow.start_run() as run:
            info = log_trigger_word_model(det_dir, _wav(3.0))
            mlflow.log_metric("test/frr_at_1fah", 0.25)
        decision = register_and_promote(info.model_uri, NAME, run.info.run_id, "test/frr_at_1fah")
        yield info, decision


def test_logged_model_signature_example_and_metadata(registered):
    info, decision = registered
    assert info.model_uri.startswith("models:/m-")
    assert decision.version == 1 and decision.promoted
    sig = info.signature
    spec = sig.inputs.inputs[0]
    assert spec.type == np.dtype(np.float32) and spec.shape == (-1,)
    assert sig.outputs.input_names() == list(COLUMNS)
    assert sig.params.to_dict()[0]["name"] == "threshold"
    assert info.metadata["sample_rate"] == SR
    example = mlflow.models.Model.load(info.model_uri).load_input_example(
        mlflow.artifacts.download_artifacts(info.model_uri))
    assert np.asarray(example).shape == (SR,)  # cut to 1 s


def test_load_by_challenger_alias_and_predict_dataframe(registered):
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@challenger")
    out = model.predict(_wav(3.0, seed=1))
    assert isinstance(out, pd.DataFrame) and list(out.columns) == list(COLUMNS)
    assert len(out) >= 1  # threshold 0: fires at the first step, then refractory
    row = out.iloc[0]
    assert 0.0 <= row["start"] <= row["end"] <= 3.0 and 0.0 <= row["score"] <= 1.0
    assert out["start"].diff().dropna().ge(1.0 - 1e-6).all()  # refractory period 1 s

    same = mlflow.pyfunc.load_model(f"models:/{NAME}@champion").predict(_wav(3.0, seed=1))
    pd.testing.assert_frame_equal(out, same)


def test_predict_threshold_param_short_audio_and_dataframe_input(registered):
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@challenger")
    none = model.predict(_wav(2.0), params={"threshold": 1.1})
    assert list(none.columns) == list(COLUMNS) and len(none) == 0
    assert str(none["score"].dtype) == "float64"
    short = model.predict(_wav(0.05))  # shorter than the receptive field: no output steps
    assert len(short) == 0 and list(short.columns) == list(COLUMNS)
    col = model.predict(pd.DataFrame({"waveform": _wav(2.0, seed=2)}))
    assert list(col.columns) == list(COLUMNS) and len(col) >= 1


def test_to_waveform_is_lenient_but_one_waveform_only():
    w = _wav(0.1)
    for x in (w, list(w), w[None, :], w[:, None], pd.DataFrame({"a": w}),
              pd.DataFrame([w]), pd.DataFrame({"w": [list(w)]}), {"waveform": w}):
        out = to_waveform(x)
        assert out.dtype == np.float32 and out.shape == w.shape
        np.testing.assert_allclose(out, w)
    with pytest.raises(ValueError, match="one waveform"):
        to_waveform(pd.DataFrame(np.zeros((3, 4))))
    with pytest.raises(ValueError, match="shape"):
        to_waveform(np.zeros((2, 5), dtype=np.float32))
    with pytest.raises(ValueError, match="NaN or Inf"):
        to_waveform(np.array([0.0, np.nan], dtype=np.float32))
    with pytest.raises(ValueError, match="numeric"):
        to_waveform(["a", "b"])
