"""Transcriber: save/load round trip, batched == one-by-one, decoding modes, bad input and bad files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from seqflow.audio.frontend import SpeechFrontend
from seqflow.errors import ConfigError, SeqflowError
from seqflow.models.asr_transformer import TransformerASR
from seqflow.models.ctc import CTCModel
from seqflow.serve.transcriber import Transcriber, load_transcriber, save_transcriber
from seqflow.text.tokenizers import CharTokenizer

SR = 16000
FEATURES = {"sample_rate": SR, "n_fft": 512, "win_length": 400, "hop_length": 160, "n_mels": 40,
            "normalize": "per_feature"}
TOK = CharTokenizer.from_texts(["the quick brown fox jumps over a lazy dog"])
CTC_CFG = {"name": "ctc", "features": FEATURES, "net": {"d_model": 32, "num_heads": 2, "num_layers": 1, "d_ff": 64,
                                                         "dropout": 0.0, "pre_ln": True},
           "decoding": {"beam_size": 1}}
TR_CFG = {"name": "transformer", "features": FEATURES,
          "net": {"d_model": 32, "num_heads": 2, "enc_layers": 1, "dec_layers": 1, "d_ff": 64, "dropout": 0.0,
                  "pre_ln": True, "ctc_weight": 0.3},
          "decoding": {"beam_size": 3, "ctc_rescoring": 0.3, "length_penalty": 0.6, "max_len": 12}}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Beam search runs many tiny ops: one intra-op thread is much faster on a busy 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _nets():
    torch.manual_seed(0)
    ctc = CTCModel(40, TOK.vocab_size, **CTC_CFG["net"])
    torch.nn.init.normal_(ctc.ctc_head.bias, std=3.0)  # an untrained net that emits varied tokens
    tr = TransformerASR(40, TOK.vocab_size, **TR_CFG["net"])
    torch.nn.init.normal_(tr.decoder.out.bias, std=3.0)
    return ctc, tr


def _wavs(n: int = 5, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(int(rng.integers(SR // 2, 2 * SR)))).astype(np.float32) for _ in range(n)]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("transcriber")
    TOK.save(root / "tok")
    ctc, tr = _nets()
    return {"ctc": (ctc, save_transcriber(root / "ctc", ctc, CTC_CFG, root / "tok")),
            "transformer": (tr, save_transcriber(root / "tr", tr, TR_CFG, root / "tok"))}


@pytest.mark.parametrize("kind", ["ctc", "transformer"])
def test_round_trip_gives_identical_transcripts(saved, kind) -> None:
    net, d = saved[kind]
    cfg = CTC_CFG if kind == "ctc" else TR_CFG
    original = Transcriber(net, SpeechFrontend.from_config(FEATURES), TOK, cfg["decoding"])
    loaded = load_transcriber(d)
    assert loaded.kind == kind and loaded.decoding["beam_size"] == cfg["decoding"]["beam_size"]
    wavs = _wavs()
    texts = loaded.transcribe_batch(wavs)
    assert texts == original.transcribe_batch(wavs)
    assert any(texts), texts  # the untrained nets emit something, so the comparison means something
    meta = json.loads((d / "transcriber.json").read_text())
    assert meta["model"] == kind and meta["vocab_size"] == TOK.vocab_size and meta["features"]["n_mels"] == 40
    assert (d / "tokenizer" / "tokenizer.json").is_file() and (d / "weights.pt").is_file()


@pytest.mark.parametrize("kind,decoding", [("ctc", {"beam_size": 1}), ("ctc", {"beam_size": 4}),
                                           ("transformer", {"beam_size": 1, "max_len": 12}),
                                           ("transformer", {"beam_size": 3, "ctc_rescoring": 0.3, "max_len": 12})])
def test_batch_equals_one_by_one(saved, kind, decoding) -> None:
    t = load_transcriber(saved[kind][1], decoding=decoding)
    wavs = _wavs(6, seed=1)
    assert t.transcribe_batch(wavs, batch_size=4) == [t.transcribe(w) for w in wavs]


def test_empty_and_very_short_audio(saved) -> None:
    t = load_transcriber(saved["ctc"][1])
    out = t.transcribe_batch([np.zeros(0, np.float32), np.zeros(10, np.float32), _wavs(1)[0]])
    assert out[0] == "" and isinstance(out[1], str) and len(out) == 3


def test_bad_input_and_bad_files(saved, tmp_path) -> None:
    t = load_transcriber(saved["ctc"][1])
    with pytest.raises(ValueError, match="NaN"):
        t.transcribe(np.array([0.0, np.nan] * 1000, dtype=np.float32))
    with pytest.raises(ValueError, match="mono"):
        t.transcribe(np.zeros((2, 1000), np.float32))
    with pytest.raises(SeqflowError, match="missing"):
        load_transcriber(tmp_path)
    ctc, tr = _nets()
    with pytest.raises(ConfigError, match="tokens"):
        save_transcriber(tmp_path / "x", CTCModel(40, TOK.vocab_size + 2, d_model=16, num_heads=2, num_layers=1,
                                                 d_ff=32), CTC_CFG, saved["ctc"][1] / "tokenizer")
    no_ctc = TransformerASR(40, TOK.vocab_size, d_model=16, num_heads=2, enc_layers=1, dec_layers=1, d_ff=32,
                            ctc_weight=0.0)
    with pytest.raises(ConfigError, match="ctc_rescoring"):
        Transcriber(no_ctc, SpeechFrontend.from_config(FEATURES), TOK, {"beam_size": 2, "ctc_rescoring": 0.5})
