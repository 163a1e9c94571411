"""Issue 3 overfit check on real audio: the CTC and Transformer models each reach CER <= 5% on a handful of
TTS-rendered training utterances, through the real config, factory, LightningModule, tokenizer, saved
transcriber and decoders (greedy and beam search)."""

from __future__ import annotations

import jiwer
import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from seqflow.audio.resample import resample
from seqflow.config import load_config
from seqflow.data.tts import EspeakTTS
from seqflow.evaluate.asr import evaluate_asr, hypotheses_table
from seqflow.lit.factory import build_module
from seqflow.serve.transcriber import Transcriber, load_transcriber, save_transcriber
from seqflow.text.tokenizers import build_tokenizer

SR = 16000
TEXTS = ["turn on the light", "hello", "set a timer", "go left", "stop the music", "what time is it"]
TINY = {"ctc": ["model.net.num_layers=2"], "transformer": ["model.net.enc_layers=2", "model.net.dec_layers=1"]}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Six phrases by two espeak voices, resampled to 16 kHz, and a char tokenizer trained on them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # many tiny ops: one thread is much faster on a busy 2-core machine
    tts = EspeakTTS()
    tts.reset(0)
    wavs = []
    for i, text in enumerate(TEXTS):
        wav, sr = tts.render(text, voice=("en-us+m1", "en-gb+f3")[i % 2], rate_wpm=160)
        wavs.append(resample(wav, sr, SR).astype(np.float32))
    tok_dir = tmp_path_factory.mktemp("overfit") / "tokenizer"
    tok = build_tokenizer("char", TEXTS, out_dir=tok_dir)
    yield wavs, tok, tok_dir
    torch.set_num_threads(threads)


def _batch(wavs, tok) -> dict:
    n = [len(w) for w in wavs]
    audio = torch.zeros(len(wavs), max(n))
    for i, w in enumerate(wavs):
        audio[i, :len(w)] = torch.from_numpy(w)
    ids = [tok.encode(t) for t in TEXTS]
    tokens = torch.zeros(len(ids), max(map(len, ids)), dtype=torch.long)
    for i, x in enumerate(ids):
        tokens[i, :len(x)] = torch.tensor(x)
    return {"audio": audio, "audio_lengths": torch.tensor(n), "tokens": tokens,
            "token_lengths": torch.tensor([len(x) for x in ids]), "texts": list(TEXTS), "keys": list(TEXTS)}


class StopAtCER(pl.Callback):
    """Every ``every`` steps, transcribe the training audio (eval mode, greedy) and stop at CER <= target."""

    def __init__(self, wavs, tok, every: int = 20, target: float = 0.05) -> None:
        self.wavs, self.tok, self.every, self.target, self.history = wavs, tok, every, target, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if (batch_idx + 1) % self.every:
            return
        hyps = Transcriber(pl_module.net, pl_module.frontend, self.tok, {"beam_size": 1}).transcribe_batch(self.wavs)
        pl_module.net.train()
        self.history.append((batch_idx + 1, float(outputs["loss"]), jiwer.cer(TEXTS, hyps)))
        trainer.should_stop = self.history[-1][2] <= self.target


@pytest.mark.parametrize("name", ["ctc", "transformer"])
def test_overfits_real_tts_utterances_to_cer_at_most_5_percent(corpus, name, tmp_path) -> None:
    wavs, tok, tok_dir = corpus
    cfg = load_config([f"model={name}", "model.net.d_model=64", "model.net.d_ff=128", "model.net.dropout=0.0",
                       "model.optim.lr=0.003", "model.optim.warmup_steps=30", "model.spec_augment.freq_masks=0",
                       "model.spec_augment.time_masks=0", *TINY[name]])
    pl.seed_everything(0, verbose=False)
    module = build_module(cfg, tokenizer_dir=tok_dir)
    batch = _batch(wavs, tok)
    stop = StopAtCER(wavs, tok)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=400, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, gradient_clip_val=5.0,
                         callbacks=[stop])
    trainer.fit(module, DataLoader([batch] * 400, batch_size=None))
    assert stop.history and stop.history[-1][2] <= 0.05, stop.history
    assert stop.history[-1][1] < stop.history[0][1]

    val = trainer.validate(module, DataLoader([batch], batch_size=None), verbose=False)[0]
    assert val["val/cer"] <= 0.05 and np.isfinite(val["val/loss"])

    saved = save_transcriber(tmp_path / "transcriber", module.net, OmegaConf.to_container(cfg.model, resolve=True),
                             tok_dir)
    beam = load_transcriber(saved)  # the config's decoding: beam search (+ CTC rescoring for the transformer)
    assert beam.decoding["beam_size"] == 4
    hyps = beam.transcribe_batch(wavs)
    assert jiwer.cer(TEXTS, hyps) <= 0.05, hyps
    greedy = load_transcriber(saved, decoding={"beam_size": 1})
    assert jiwer.cer(TEXTS, greedy.transcribe_batch(wavs)) <= 0.05

    samples = [(f"train-{i}", w, {"text": t, "source": "synthetic"}) for i, (w, t) in enumerate(zip(wavs, TEXTS))]
    metrics, rows = evaluate_asr(beam, samples, batch_size=4, progress=False)
    assert metrics["test/cer"] == pytest.approx(jiwer.cer(TEXTS, hyps)) and metrics["test/synthetic/cer"] <= 0.05
    assert metrics["test/num_utterances"] == len(TEXTS) and [r["hypothesis"] for r in rows] == hyps
    assert "| train-0 | synthetic |" in hypotheses_table(rows, tmp_path / "hyp.md").read_text()
