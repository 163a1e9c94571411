"""Transformer encoder/decoder masking, TransformerASR teacher forcing, losses, Noam schedule, and overfitting."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from _asr_synthetic import N_MELS, TEXTS, cer, train_tiny_transformer

from seqflow.models.asr_transformer import TransformerASR, add_sos_eos
from seqflow.models.losses import IGNORE_INDEX, ctc_loss, joint_ctc_attention_loss, label_smoothed_nll
from seqflow.models.schedules import noam_lr, noam_scheduler
from seqflow.models.transformer import TransformerDecoder, TransformerEncoder, lengths_to_pad_mask


@pytest.mark.parametrize("pre_ln", [True, False])
def test_encoder_respects_padding(pre_ln: bool) -> None:
    torch.manual_seed(0)
    enc = TransformerEncoder(d_model=32, num_heads=4, num_layers=2, d_ff=64, dropout=0.0, pre_ln=pre_ln).eval()
    x = torch.randn(2, 10, 32)
    pad = lengths_to_pad_mask(torch.tensor([10, 6]))
    y = enc(x, pad)
    x2 = x.clone()
    x2[1, 6:] = 100 * torch.randn(4, 32)                      # change only padded frames
    y2 = enc(x2, pad)
    torch.testing.assert_close(y2[1, :6], y[1, :6], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(y2[0], y[0])
    torch.testing.assert_close(enc(x[1:, :6]), y[1:, :6], atol=1e-5, rtol=1e-5)  # = no padding at all
    assert not torch.allclose(enc(x2), enc(x))                # without the mask the change leaks


@pytest.mark.parametrize("pre_ln", [True, False])
def test_decoder_is_causal(pre_ln: bool) -> None:
    torch.manual_seed(0)
    dec = TransformerDecoder(vocab_size=11, d_model=32, num_heads=4, num_layers=2, d_ff=64, dropout=0.0,
                             pre_ln=pre_ln).eval()
    memory, mem_pad = torch.randn(2, 9, 32), lengths_to_pad_mask(torch.tensor([9, 5]))
    tokens = torch.randint(1, 11, (2, 7))
    logits = dec(tokens, memory, mem_pad)
    assert logits.shape == (2, 7, 11)
    changed = tokens.clone()
    changed[:, 4] = (changed[:, 4] % 10) + 1                  # a different future token at u = 4
    logits2 = dec(changed, memory, mem_pad)
    torch.testing.assert_close(logits2[:, :4], logits[:, :4])
    assert not torch.allclose(logits2[:, 4:], logits[:, 4:])
    memory2 = memory.clone()
    memory2[1, 5:] = 100.0                                    # padded memory frames are not attended
    torch.testing.assert_close(dec(tokens, memory2, mem_pad)[1], logits[1], atol=1e-5, rtol=1e-5)


def test_add_sos_eos() -> None:
    tgt, lengths = torch.tensor([[5, 6, 7], [8, 0, 0]]), torch.tensor([3, 1])
    tin, tout, n = add_sos_eos(tgt, lengths, sos=1, eos=2)
    assert tin.tolist() == [[1, 5, 6, 7], [1, 8, 0, 0]]
    assert tout.tolist() == [[5, 6, 7, 2], [8, 2, IGNORE_INDEX, IGNORE_INDEX]]
    assert n.tolist() == [4, 2]


def test_transformer_asr_shapes_and_target_padding() -> None:
    torch.manual_seed(0)
    m = TransformerASR(N_MELS, 13, d_model=32, num_heads=4, enc_layers=1, dec_layers=1, d_ff=64, dropout=0.0).eval()
    tin, _, tin_len = add_sos_eos(torch.tensor([[5, 6, 7], [8, 0, 0]]), torch.tensor([3, 1]), 1, 2)
    att, ctc, n = m(torch.randn(2, 60, N_MELS), torch.tensor([60, 45]), tin, tin_len)
    assert att.shape == (2, 4, 13) and ctc.shape == (2, 14, 13) and n.tolist() == [14, 10]
    tin2 = tin.clone()
    tin2[1, 2:] = 9                                            # padding token values do not matter
    feats = torch.randn(2, 60, N_MELS)
    a, _, _ = m(feats, torch.tensor([60, 45]), tin, tin_len)
    b, _, _ = m(feats, torch.tensor([60, 45]), tin2, tin_len)
    torch.testing.assert_close(a[1, :2], b[1, :2])              # valid positions: [sos, 8]
    assert TransformerASR(N_MELS, 13, d_model=32, num_heads=4, enc_layers=1, dec_layers=1, d_ff=64,
                          ctc_weight=0.0).ctc_head is None
    with pytest.raises(ValueError, match="ctc_weight"):
        TransformerASR(N_MELS, 13, ctc_weight=1.0)


def test_label_smoothed_nll_matches_definition() -> None:
    torch.manual_seed(0)
    logits, tgt = torch.randn(2, 3, 5), torch.tensor([[1, 4, IGNORE_INDEX], [0, IGNORE_INDEX, IGNORE_INDEX]])
    eps, V = 0.1, 5
    logp = logits.log_softmax(-1)
    manual = []
    for b, u in [(0, 0), (0, 1), (1, 0)]:
        q = torch.full((V,), eps / V)
        q[tgt[b, u]] += 1 - eps
        manual.append(-(q * logp[b, u]).sum())
    assert label_smoothed_nll(logits, tgt, smoothing=eps).item() == pytest.approx(torch.stack(manual).mean().item(),
                                                                                   rel=1e-6)
    assert label_smoothed_nll(logits, tgt, smoothing=0.0).item() == pytest.approx(
        F.nll_loss(logp.reshape(-1, V), tgt.reshape(-1), ignore_index=IGNORE_INDEX).item(), rel=1e-6)
    assert label_smoothed_nll(logits, torch.full((2, 3), IGNORE_INDEX)).item() == 0.0


def test_joint_loss_is_weighted_sum() -> None:
    torch.manual_seed(0)
    att, ctc_lp = torch.randn(2, 4, 9), torch.randn(2, 12, 9).log_softmax(-1)
    tgt, tl = torch.tensor([[5, 6, 7], [8, 0, 0]]), torch.tensor([3, 1])
    _, tout, _ = add_sos_eos(tgt, tl, 1, 2)
    lengths = torch.tensor([12, 10])
    loss, parts = joint_ctc_attention_loss(att, tout, ctc_lp, lengths, tgt, tl, ctc_weight=0.3, smoothing=0.1)
    expected = 0.3 * ctc_loss(ctc_lp, lengths, tgt, tl) + 0.7 * label_smoothed_nll(att, tout, smoothing=0.1)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert parts["ctc"].item() > 0 and parts["att"].item() > 0
    att_only, parts0 = joint_ctc_attention_loss(att, tout, None, None, tgt, tl, ctc_weight=0.0)
    assert att_only.item() == pytest.approx(label_smoothed_nll(att, tout).item()) and parts0["ctc"].item() == 0


def test_noam_schedule() -> None:
    d, warmup = 256, 100
    peak = noam_lr(warmup, d, warmup)
    assert peak == pytest.approx((d * warmup) ** -0.5)
    assert noam_lr(50, d, warmup) == pytest.approx(peak / 2)                 # linear warm-up
    assert noam_lr(400, d, warmup) == pytest.approx(peak / 2)                # 1/sqrt(step) decay
    assert max(noam_lr(s, d, warmup) for s in range(1, 1000)) == pytest.approx(peak)
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = noam_scheduler(opt, d, warmup, factor=2.0)
    lrs = []
    for _ in range(200):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(noam_lr(1, d, warmup, 2.0)) and lrs[99] == pytest.approx(2 * peak)
    assert lrs[199] == pytest.approx(2 * peak * math.sqrt(100 / 200))


def test_overfits_a_handful_of_utterances_to_low_cer() -> None:
    """Issue 3: the Transformer model reaches CER <= 5% on a few training utterances (real tokenizer, greedy
    decoder; the beam-search checks on the same model are in test_models_decoding.py)."""
    _, _, _, _, hyps = train_tiny_transformer()
    assert cer(TEXTS, hyps) <= 0.05, hyps
