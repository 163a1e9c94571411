"""ONNX export: tiny real models logged as pyfuncs and registered in a SQLite MLflow store, exported
from ``models:/`` URIs (CLI, function, on-the-fly loader) and run on onnxruntime against the PyTorch
pyfuncs on espeak-rendered speech: step probabilities / CTC log-probs (max abs difference printed),
detections, streaming and transcripts must agree."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

from seqflow.audio.features import LogMel
from seqflow.audio.resample import resample
from seqflow.cli import app
from seqflow.data.tts import EspeakTTS
from seqflow.errors import ConfigError, SeqflowError
from seqflow.export import ExportError, OnnxDetector, OnnxTranscriber, export_onnx, load_onnx_model
from seqflow.export.graphs import UncentredLogMel
from seqflow.models.asr_transformer import TransformerASR
from seqflow.models.ctc import CTCModel
from seqflow.models.speech_embedding import EmbeddingTriggerNet, SpeechEmbeddingFrontEnd
from seqflow.models.trigger_word import TriggerWordNet
from seqflow.serve.detector import save_detector
from seqflow.serve.embedding_detector import save_embedding_detector
from seqflow.serve.transcriber import save_transcriber
from seqflow.text.tokenizers import CharTokenizer
from seqflow.tracking.pyfunc import log_asr_model, log_trigger_word_model
from seqflow.tracking.pyfunc_embedding import log_embedding_trigger_word_model
from seqflow.tracking.registry import register_and_promote
from _mlflow_store import mlflow_store

SR = 16000
FEATURES = {"sample_rate": SR, "n_fft": 512, "win_length": 400, "hop_length": 160, "n_mels": 40}
NAMES = {"logmel": "seqflow-trigger-word-activate", "embedding": "seqflow-trigger-word-emb-activate",
         "ctc": "seqflow-asr-ctc"}
runner = CliRunner()


def _speech() -> np.ndarray:
    """~6 s of espeak speech at 16 kHz (the trigger word twice, a sentence between) over a noise floor."""
    tts, rng, parts = EspeakTTS(), np.random.default_rng(0), []
    for text, voice in (("activate", "en-us+f3"), ("set a timer for ten minutes", "en-gb+m2"),
                        ("activate", "en-us+m1")):
        parts.append(np.zeros(int(0.6 * SR), np.float32))
        wav, sr = tts.render(text, voice=voice)
        parts.append(resample(wav, sr, SR))
    parts.append(np.zeros(int(0.5 * SR), np.float32))
    x = np.concatenate(parts)
    return (x + 0.003 * rng.standard_normal(len(x))).astype(np.float32)


def _randomise_norms(net: torch.nn.Module) -> None:
    """BatchNorm running statistics away from (0, 1), so every layer shapes the output."""
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.normal_(0.0, 0.5)
            m.running_var.uniform_(0.5, 2.0)


def _log(uri_name: str, log_fn, folder, wav, metric: str) -> None:
    with mlflow.start_run() as run:
        info = log_fn(folder, wav)
        mlflow.log_metric(metric, 0.5)
    register_and_promote(info.model_uri, uri_name, run.info.run_id, metric)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Three tiny real models (log-mel detector, speech-embedding detector, CTC) registered with
    alias ``champion``; yields ``(root, tracking uri, speech)``."""
    root = tmp_path_factory.mktemp("export")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    speech = _speech()
    with mlflow_store(root, "seqflow/export") as uri:
        torch.manual_seed(0)
        net = TriggerWordNet(40, conv_channels=16, gru_hidden=16, gru_layers=2, dropout=0.0)
        _randomise_norms(net)
        cfg = {"features": FEATURES, "net": {"conv_channels": 16, "conv_kernel": 15, "conv_stride": 4,
                                             "gru_hidden": 16, "gru_layers": 2, "dropout": 0.0}}
        _log(NAMES["logmel"], log_trigger_word_model, save_detector(root / "logmel", net, cfg, 0.5, 1.0), speech,
             "test/frr")
        head = EmbeddingTriggerNet(gru_hidden=16, gru_layers=2, dropout=0.0)
        _randomise_norms(head)
        emb_cfg = {"family": "seqflow.families.trigger_word_embedding",
                   "net": {"gru_hidden": 16, "gru_layers": 2, "dropout": 0.0}}
        _log(NAMES["embedding"], log_embedding_trigger_word_model,
             save_embedding_detector(root / "embedding", head, emb_cfg, SpeechEmbeddingFrontEnd(), 0.5, 1.0), speech,
             "test/frr")
        tok = CharTokenizer.from_texts(["set a timer for ten minutes activate"])
        tok.save(root / "tok")
        ctc_cfg = {"name": "ctc", "features": FEATURES, "decoding": {"beam_size": 2},
                   "net": {"d_model": 32, "num_heads": 2, "num_layers": 2, "d_ff": 64, "dropout": 0.0}}
        ctc = CTCModel(40, tok.vocab_size, **ctc_cfg["net"])
        torch.nn.init.normal_(ctc.ctc_head.bias, std=2.0)
        _log(NAMES["ctc"], log_asr_model, save_transcriber(root / "ctc", ctc, ctc_cfg, root / "tok"), speech,
             "test/wer")
        yield root, uri, speech
    torch.set_num_threads(threads)


def _threshold(probs: np.ndarray) -> float:
    """A threshold in the widest gap between the 60th and 95th percentile of ``probs`` (several
    detections, and no probability within float rounding of it)."""
    p = np.sort(probs)
    lo, hi = int(0.6 * len(p)), int(0.95 * len(p))
    i = lo + int(np.argmax(np.diff(p[lo:hi + 1])))
    return float((p[i] + p[i + 1]) / 2)


@pytest.mark.parametrize("model,how", [("logmel", "cli"), ("embedding", "function")])
def test_detector_export_matches_pytorch_pyfunc_on_speech(store, model, how, tmp_path):
    _, uri, speech = store
    source, out = f"models:/{NAMES[model]}@champion", tmp_path / "exports" / model
    if how == "cli":
        res = runner.invoke(app, ["export", source, "--format", "onnx", "--out", str(out), "--tracking-uri", uri])
        assert res.exit_code == 0, res.output
        assert "max |ONNX - PyTorch|" in res.output
    else:
        assert export_onnx(source, out) == out
    assert sorted(p.name for p in out.parent.iterdir()) == [model]  # temp folder renamed, nothing left
    meta = json.loads((out / "onnx_model.json").read_text())
    assert meta["source"]["name"] == NAMES[model] and meta["source"]["version"] == 1
    assert meta["check"]["max_abs_diff"] < 1e-4 and meta["threshold"] == 0.5
    inputs = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
              for i in onnx.load(str(out / "model.onnx")).graph.input}
    assert inputs["audio"] == ["batch", "samples"] and inputs["h0"][1] == "batch"  # dynamic axes

    pyfunc = mlflow.pyfunc.load_model(source)
    torch_det = pyfunc.unwrap_python_model().detector
    det = load_onnx_model(out, threads=1)
    assert isinstance(det, OnnxDetector) and det.sample_rate == SR and det.threshold == torch_det.threshold
    ref, ref_t = torch_det.scores(speech)
    got, got_t = det.scores(speech)
    diff = float(np.max(np.abs(ref - got)))
    print(f"{model}: {len(got)} steps on {len(speech) / SR:.1f} s of speech, max |ONNX - PyTorch| = {diff:.2e}")
    assert got.shape == ref.shape and len(got) > 40 and diff < 1e-4
    np.testing.assert_allclose(got_t, ref_t)
    assert ref.std() > 1e-3  # the untrained net still reacts to the audio

    thr = _threshold(ref)
    frame = pyfunc.predict(speech, params={"threshold": thr})
    dets = det.detect(speech, threshold=thr)
    assert len(dets) >= 1 and len(dets) == len(frame)
    np.testing.assert_allclose([[d["start"], d["end"]] for d in dets], frame[["start", "end"]].to_numpy())
    np.testing.assert_allclose([d["score"] for d in dets], frame["score"].to_numpy(), atol=1e-4)
    many = det.scores_many([speech, speech[: 2 * SR]])
    np.testing.assert_allclose(many[0], got, atol=1e-5)
    np.testing.assert_allclose(many[1], torch_det.scores(speech[: 2 * SR])[0], atol=1e-4)

    # streaming: 20 ms pushes give the offline probabilities, PyTorch's streamed events and detect()'s runs
    stream, torch_stream, probs, events, torch_events = det.stream(thr), torch_det.stream(thr), [], [], []
    for i in range(0, len(speech), 320):
        p, e = stream.step(speech[i:i + 320])
        probs.append(p)
        events += e
        torch_events += torch_stream.push(speech[i:i + 320])
    p, e = stream.flush_step()
    probs.append(p)
    events += e
    torch_events += torch_stream.flush()
    np.testing.assert_allclose(np.concatenate(probs), got, atol=1e-5)
    assert [d["start"] for d in events] == [d["start"] for d in torch_events] == [d["start"] for d in dets]
    assert [(d["start"], d["end"]) for d in stream.pop_completed()] == [(d["start"], d["end"]) for d in dets]


def test_ctc_loaded_from_registry_matches_pytorch_pyfunc_on_speech(store, tmp_path):
    _, _, speech = store
    source = f"models:/{NAMES['ctc']}@champion"
    cache = tmp_path / "cache"
    model = load_onnx_model(source, cache_dir=cache, threads=1)  # exported on the fly
    assert isinstance(model, OnnxTranscriber) and model.sample_rate == SR
    (entry,) = list(cache.iterdir())
    stamp = (entry / "model.onnx").stat().st_mtime_ns
    assert load_onnx_model(source, cache_dir=cache).folder == entry  # same content: cache reused
    assert (entry / "model.onnx").stat().st_mtime_ns == stamp and len(list(cache.iterdir())) == 1

    pyfunc = mlflow.pyfunc.load_model(source)
    transcriber = pyfunc.unwrap_python_model().transcriber
    pieces = [speech[: int(1.7 * SR)], speech, speech[int(1.7 * SR): int(4.2 * SR)], speech[:600]]
    with torch.no_grad():
        feats, lengths = transcriber.frontend.features_each(pieces[:3])
        ref_lp, ref_n = transcriber.net(feats, lengths)
    got = model.log_probs(pieces[:3])
    diff = max(float(np.max(np.abs(ref_lp[i, :int(ref_n[i])].numpy() - g))) for i, g in enumerate(got))
    print(f"ctc: {sum(len(g) for g in got)} frames, max |ONNX - PyTorch| log-prob = {diff:.2e}")
    assert [len(g) for g in got] == ref_n.tolist() and diff < 1e-3

    texts = model.transcribe_batch(pieces + [np.zeros(0, np.float32)])
    assert texts[:-1] == pyfunc.predict(pieces)["text"].tolist() and texts[-1] == ""
    assert any(texts) and model.transcribe(speech) == texts[1]
    greedy = load_onnx_model(entry)
    greedy.decoding["beam_size"] = 1
    transcriber.decoding["beam_size"] = 1
    assert greedy.transcribe_batch(pieces) == transcriber.transcribe_batch(pieces)


def test_bad_requests_are_one_line_errors(store, tmp_path):
    root, uri, _ = store
    res = runner.invoke(app, ["export", "models:/seqflow-asr-ctc@nope", "--out", str(tmp_path / "x"),
                              "--tracking-uri", uri])
    assert res.exit_code == 2 and "cannot resolve" in res.output and "Traceback" not in res.output
    with pytest.raises(ConfigError, match="supported formats"):
        export_onnx(root / "ctc", tmp_path / "x", fmt="tflite")
    with pytest.raises(SeqflowError, match="no such model folder"):
        export_onnx(tmp_path / "missing", tmp_path / "x")
    tok = CharTokenizer.from_texts(["abc"])
    tok.save(tmp_path / "tok")
    net = TransformerASR(40, tok.vocab_size, d_model=16, num_heads=2, enc_layers=1, dec_layers=1, d_ff=32)
    pkg = save_transcriber(tmp_path / "transformer", net, {"features": FEATURES}, tmp_path / "tok")
    with pytest.raises(ExportError, match="attention decoder stays PyTorch"):
        export_onnx(pkg, tmp_path / "x")
    keep = tmp_path / "not-an-export"
    (keep / "notes.txt").parent.mkdir()
    (keep / "notes.txt").write_text("mine")
    with pytest.raises(SeqflowError, match="not an ONNX export"):
        export_onnx(root / "logmel", keep)
    assert (keep / "notes.txt").read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == [
        "not-an-export", "tok", "transformer"]  # no temp folder left behind
    out = export_onnx(root / "logmel", tmp_path / "logmel")  # a package folder works too
    stamp = (out / "model.onnx").stat().st_mtime_ns
    assert export_onnx(root / "logmel", out) == out and (out / "model.onnx").stat().st_mtime_ns != stamp  # replaced
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp or old folder left
    det = load_onnx_model(out)
    with pytest.raises(ValueError, match="NaN or Inf"):
        det.detect(np.array([0.0, np.nan] * 4000, np.float32))
    assert det.detect(np.zeros(1000, np.float32)) == []  # shorter than the receptive field
    with pytest.raises(ExportError, match="attention decoder"):  # a package is exported on the fly: refused
        load_onnx_model(pkg, cache_dir=tmp_path / "cache")
    with pytest.raises(SeqflowError, match="not a seqflow model"):
        load_onnx_model(tmp_path / "tok", cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("n_fft,win_length", [(512, 400), (400, 400)])
def test_dft_basis_log_mel_equals_torch_stft_log_mel(n_fft, win_length):
    logmel = LogMel(SR, n_fft=n_fft, win_length=win_length, hop_length=160, n_mels=40)
    x = torch.from_numpy(_speech()[: 2 * SR + 77])
    padded = torch.nn.functional.pad(x[None, None], (n_fft // 2, n_fft // 2), mode="reflect")[0]
    ref, _ = logmel(x[None])
    got = UncentredLogMel(logmel)(padded)
    assert got.shape == ref.shape == (1, 1 + len(x) // 160, 40)
    assert float((got - ref).abs().max()) < 1e-4  # log-mel, about 7e-6 here
