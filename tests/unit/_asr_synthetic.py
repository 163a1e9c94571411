"""Synthetic "utterances" for the ASR model tests (imported by tests/unit/test_models_*.py).

Each character of a transcript is a fixed random mel pattern (one per character, shared by all
utterances) held for 4–8 frames with noise, then one silent frame; 4 silent frames pad each end.
Recognizing them needs the real alignment machinery (CTC or attention) but no audio.
"""

from __future__ import annotations

import math

import jiwer
import torch
from torch.nn.utils.rnn import pad_sequence

from seqflow.models.asr_transformer import TransformerASR, add_sos_eos
from seqflow.models.decoding import attention_greedy_decode
from seqflow.models.losses import joint_ctc_attention_loss
from seqflow.models.schedules import noam_scheduler
from seqflow.text.tokenizers import CharTokenizer

TEXTS = ("turn on the lights", "hello", "set a timer", "go left")
N_MELS = 40


def synthetic_features(texts, n_mels: int = N_MELS, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(feats (B, T, F), lengths (B,))`` for ``texts``, zero-padded to the longest."""
    g = torch.Generator().manual_seed(seed)
    patterns = {c: torch.randn(n_mels, generator=g) for c in sorted(set("".join(texts)))}
    utts = []
    for text in texts:
        frames = [torch.zeros(4, n_mels)]
        for c in text:
            n = int(torch.randint(4, 9, (1,), generator=g))
            frames += [patterns[c].expand(n, n_mels) + 0.3 * torch.randn(n, n_mels, generator=g),
                       torch.zeros(1, n_mels)]
        frames.append(torch.zeros(4, n_mels))
        utts.append(torch.cat(frames))
    return pad_sequence(utts, batch_first=True), torch.tensor([len(u) for u in utts])


def targets(tok: CharTokenizer, texts) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded token ids ``(B, U)`` (padding = blank id 0) and ``target_lengths (B,)``."""
    ids = [torch.tensor(tok.encode(t)) for t in texts]
    return pad_sequence(ids, batch_first=True, padding_value=tok.blank_id), torch.tensor([len(i) for i in ids])


def cer(references, hypotheses) -> float:
    """Character error rate over the whole set (jiwer)."""
    return jiwer.cer(list(references), list(hypotheses))


def train_tiny_transformer(steps: int = 200, d_model: int = 64, layers: int = 2):
    """Train a small TransformerASR on TEXTS until greedy CER <= 5% (or ``steps``).

    Returns ``(model (eval), tokenizer, feats, lengths, greedy hypotheses)``.
    """
    torch.manual_seed(0)
    tok = CharTokenizer.from_texts(TEXTS)
    feats, lengths = synthetic_features(TEXTS)
    tgt, tgt_lengths = targets(tok, TEXTS)
    tin, tout, tin_lengths = add_sos_eos(tgt, tgt_lengths, tok.sos_id, tok.eos_id)
    model = TransformerASR(N_MELS, tok.vocab_size, d_model=d_model, num_heads=4, enc_layers=layers,
                           dec_layers=layers, d_ff=2 * d_model, dropout=0.0, ctc_weight=0.3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.98))
    warmup = 25
    sched = noam_scheduler(opt, d_model, warmup, factor=3e-3 * math.sqrt(d_model * warmup))  # peak lr 3e-3
    hyps: list[str] = []
    for step in range(1, steps + 1):
        model.train()
        att, ctc_lp, n = model(feats, lengths, tin, tin_lengths)
        loss, _ = joint_ctc_attention_loss(att, tout, ctc_lp, n, tgt, tgt_lengths, ctc_weight=0.3, smoothing=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 10 == 0:
            model.eval()
            hyps = [tok.decode(h) for h in attention_greedy_decode(model, feats, lengths, tok.sos_id, tok.eos_id)]
            if cer(TEXTS, hyps) <= 0.05:
                break
    return model.eval(), tok, feats, lengths, hyps
