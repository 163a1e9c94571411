"""CTC model: exact output lengths, padding independence, CTC feasibility, loss, and overfitting a few utterances."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _asr_synthetic import N_MELS, TEXTS, cer, synthetic_features, targets

from seqflow.models.ctc import CTCModel, ctc_feasible, ctc_output_frames, min_frames_for_ctc
from seqflow.models.decoding import ctc_greedy_decode, ctc_prefix_beam_search
from seqflow.models.losses import ctc_loss
from seqflow.models.subsampling import ConvSubsampling4x, subsampled_length
from seqflow.text.tokenizers import CharTokenizer


@pytest.fixture(scope="module")
def small() -> CTCModel:
    torch.manual_seed(0)
    return CTCModel(N_MELS, vocab_size=12, d_model=32, num_heads=4, num_layers=2, d_ff=64, dropout=0.0).eval()


@pytest.mark.parametrize("T", [7, 8, 9, 10, 11, 50, 101, 501, 1000])
def test_subsampled_length_is_exact(T: int) -> None:
    sub = ConvSubsampling4x(N_MELS, 16)
    y, n = sub(torch.randn(1, T, N_MELS), torch.tensor([T]))
    assert y.shape[1] == subsampled_length(T) == int(n) == subsampled_length(torch.tensor([T])).item()


def test_subsampled_length_values() -> None:
    assert [subsampled_length(T) for T in (0, 6, 7, 10, 11, 501)] == [0, 0, 1, 1, 2, 124]
    assert ctc_output_frames(16000 * 5, 160) == 124  # 5 s → 501 log-mel frames → 124 frames of 40 ms


def test_too_few_frames_is_a_clear_error(small: CTCModel) -> None:
    with pytest.raises(ValueError, match="at least 7 feature frames"):
        small(torch.randn(1, 6, N_MELS))


def test_padding_does_not_change_valid_outputs(small: CTCModel) -> None:
    torch.manual_seed(1)
    feats = torch.randn(3, 120, N_MELS)
    lengths = torch.tensor([120, 77, 40])
    lp, n = small(feats, lengths)
    assert lp.shape == (3, subsampled_length(120), 12) and n.tolist() == [subsampled_length(int(L)) for L in lengths]
    torch.testing.assert_close(lp.exp().sum(-1), torch.ones(3, lp.shape[1]))  # log_softmax over V
    noisy = feats.clone()
    for b, L in enumerate(lengths.tolist()):
        noisy[b, L:] = 50 * torch.randn(120 - L, N_MELS)
    lp2, _ = small(noisy, lengths)
    for b in range(3):
        torch.testing.assert_close(lp2[b, : n[b]], lp[b, : n[b]], atol=1e-5, rtol=1e-5)
        alone, _ = small(feats[b:b + 1, : lengths[b]])  # the same utterance without any padding
        torch.testing.assert_close(alone[0], lp[b, : n[b]], atol=1e-5, rtol=1e-5)


def test_min_frames_counts_repeats() -> None:
    assert min_frames_for_ctc([]) == 0
    assert min_frames_for_ctc([5, 6, 7]) == 3
    assert min_frames_for_ctc([1, 2, 3, 3, 4]) == 6        # "hello": h e l ∅ l o
    assert min_frames_for_ctc([7, 7, 7]) == 5


@pytest.mark.parametrize("ids", [[5], [4, 5, 6, 6, 7], [3, 3, 3, 3], list(range(4, 24))])
def test_ctc_feasible_agrees_with_the_ctc_loss(ids: list[int]) -> None:
    need = max(1, min_frames_for_ctc(ids))
    # the shortest audio that yields `need` output frames, and one hop less
    S = next(s for s in range(0, 16000 * 5, 160) if ctc_output_frames(s, 160) >= need)
    assert ctc_feasible(S, ids, 160) and not ctc_feasible(S - 160, ids, 160)
    tgt = torch.tensor([ids])
    for T, finite in ((ctc_output_frames(S, 160), True), (ctc_output_frames(S - 160, 160), False)):
        if T == 0:
            continue  # no output frame at all: nothing to score
        lp = torch.randn(T, 1, 30).log_softmax(-1)
        loss = F.ctc_loss(lp, tgt, torch.tensor([T]), torch.tensor([len(ids)]), blank=0, zero_infinity=False)
        assert bool(torch.isfinite(loss)) == finite


def test_ctc_loss_helper_matches_torch_and_zeroes_infeasible() -> None:
    torch.manual_seed(2)
    lp = torch.randn(2, 10, 8).log_softmax(-1).requires_grad_()
    tgt = torch.tensor([[1, 2, 3, 0], [4, 4, 5, 6]])
    lengths, tl = torch.tensor([10, 4]), torch.tensor([3, 4])   # 2nd needs 5 frames, has 4 → infeasible
    per_utt = ctc_loss(lp, lengths, tgt, tl, reduction="none")
    direct = F.ctc_loss(lp.transpose(0, 1), tgt, lengths, tl, blank=0, reduction="none")
    assert torch.isfinite(direct[0]) and torch.isinf(direct[1])
    torch.testing.assert_close(per_utt[0], direct[0])
    assert per_utt[1].item() == 0.0
    loss = ctc_loss(lp, lengths, tgt, tl)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(lp.grad).all()


def test_overfits_a_handful_of_utterances_to_low_cer() -> None:
    """Issue 3: the CTC model reaches CER <= 5% on a few training utterances (real tokenizer and decoders)."""
    torch.manual_seed(0)
    tok = CharTokenizer.from_texts(TEXTS)
    feats, lengths = synthetic_features(TEXTS)
    tgt, tgt_lengths = targets(tok, TEXTS)
    model = CTCModel(N_MELS, tok.vocab_size, d_model=64, num_heads=4, num_layers=2, d_ff=128, dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses, hyps = [], []
    for step in range(1, 201):
        model.train()
        lp, n = model(feats, lengths)
        loss = ctc_loss(lp, n, tgt, tgt_lengths)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % 10 == 0:
            model.eval()
            with torch.no_grad():
                lp, n = model(feats, lengths)
            hyps = [tok.decode(ids) for ids in ctc_greedy_decode(lp, n)]
            if cer(TEXTS, hyps) <= 0.05:
                break
    assert cer(TEXTS, hyps) <= 0.05, (hyps, losses[-1])
    assert losses[-1] < losses[0] / 5
    beam = [tok.decode(ctc_prefix_beam_search(lp[b, : n[b]], beam_size=4)[0][0]) for b in range(len(TEXTS))]
    assert cer(TEXTS, beam) <= 0.05, beam
