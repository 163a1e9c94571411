"""ASR pyfunc: log a real (untrained) transcriber into a SQLite MLflow store, register it, load, predict."""

from __future__ import annotations


import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from seqflow.models.ctc import CTCModel
from seqflow.serve.transcriber import load_transcriber, save_transcriber
from seqflow.text.tokenizers import CharTokenizer
from seqflow.tracking.pyfunc import log_asr_model, to_waveforms
from seqflow.tracking.registry import register_and_promote
from _mlflow_store import mlflow_store

NAME = "seqflow-asr-ctc"
SR = 16000
MODEL_CFG = {"name": "ctc",
             "features": {"sample_rate": SR, "n_fft": 512, "win_length": 400, "hop_length": 160, "n_mels": 40},
             "net": {"d_model": 32, "num_heads": 2, "num_layers": 1, "d_ff": 64, "dropout": 0.0},
             "decoding": {"beam_size": 2}}


def _wav(seconds: float, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    root = tmp_path_factory.mktemp("asr-pyfunc")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with mlflow_store(root, "seqflow/ctc"):
        tok = CharTokenizer.from_texts(["set a timer for ten minutes"])
        tok.save(root / "tok")
        torch.manual_seed(0)
        net = CTCModel(40, tok.vocab_size, **MODEL_CFG["net"])
        torch.nn.init.normal_(net.ctc_head.bias, std=3.0)
        tdir = save_transcriber(root / "transcriber", net, MODEL_CFG, root / "tok")
        with mlflow.start_run() as run:
            info = log_asr_model(tdir, _wav(3.0))
            mlflow.log_metric("test/wer", 0.5)
        decision = register_and_promote(info.model_uri, NAME, run.info.run_id, "test/wer")
        yield info, decision, run.info.run_id, load_transcriber(tdir)
    torch.set_num_threads(threads)


def test_logged_model_metadata_and_signature(logged) -> None:
    info, decision, _, _ = logged
    assert info.model_uri.startswith("models:/m-") and decision.version == 1 and decision.promoted
    assert info.metadata["seqflow.model"] == "ctc" and info.metadata["sample_rate"] == SR
    assert info.signature.inputs is None and info.signature.outputs.input_names() == ["text"]


@pytest.mark.parametrize("uri", ["model_uri", "runs", "alias"])
def test_load_and_predict_matches_the_transcriber(logged, uri) -> None:
    info, _, run_id, transcriber = logged
    target = {"model_uri": info.model_uri, "runs": f"runs:/{run_id}/model", "alias": f"models:/{NAME}@champion"}[uri]
    model = mlflow.pyfunc.load_model(target)
    wavs = [_wav(1.2, 1), _wav(2.0, 2), _wav(0.7, 3)]
    expected = transcriber.transcribe_batch(wavs)
    assert any(expected)
    one = model.predict(wavs[1])
    assert isinstance(one, pd.DataFrame) and list(one.columns) == ["text"] and one["text"].tolist() == [expected[1]]
    assert model.predict(wavs)["text"].tolist() == expected
    frame = pd.DataFrame({"waveform": [w.tolist() for w in wavs]})
    assert model.predict(frame)["text"].tolist() == expected


def test_to_waveforms_forms_and_errors() -> None:
    w = np.arange(5, dtype=np.float32)
    assert [x.tolist() for x in to_waveforms(w)] == [w.tolist()]
    assert len(to_waveforms(w.reshape(1, -1))) == 1 and len(to_waveforms(w.reshape(-1, 1))) == 1
    assert len(to_waveforms(np.stack([w, w, w]))) == 3
    assert [len(x) for x in to_waveforms([w, w[:2]])] == [5, 2]
    assert len(to_waveforms([0.0, 0.5, 1.0])) == 1
    assert [len(x) for x in to_waveforms({"waveform": [w, w[:3]]})] == [5, 3]
    assert [len(x) for x in to_waveforms(np.array([w, w[:1]], dtype=object))] == [5, 1]
    with pytest.raises(ValueError, match="NaN"):
        to_waveforms([w, np.array([np.inf], dtype=np.float32)])
    with pytest.raises(ValueError, match="numeric"):
        to_waveforms(["a", "b"])
