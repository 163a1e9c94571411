"""CTC greedy / prefix beam search, CTC prefix scores, and attention beam search with length normalization."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _asr_synthetic import N_MELS, TEXTS, cer, train_tiny_transformer

from seqflow.models.asr_transformer import TransformerASR
from seqflow.models.decoding import (CTCPrefixScorer, attention_beam_search, attention_beam_search_hyps,
                                     attention_greedy_decode, ctc_greedy_decode, ctc_prefix_beam_search,
                                     length_penalty)


def collapse(path, blank: int = 0) -> tuple[int, ...]:
    out, prev = [], None
    for s in path:
        if s != prev and s != blank:
            out.append(s)
        prev = s
    return tuple(out)


def exact_labelling_logprobs(lp: np.ndarray) -> dict[tuple[int, ...], float]:
    """log P(labelling) by enumerating every frame path (Graves et al. 2006 eq. 3); tiny T and V only."""
    T, V = lp.shape
    probs: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(V), repeat=T):
        p = math.exp(sum(lp[t, s] for t, s in enumerate(path)))
        key = collapse(path)
        probs[key] = probs.get(key, 0.0) + p
    return {k: math.log(v) for k, v in probs.items()}


def test_greedy_merges_repeats_then_removes_blanks() -> None:
    path = [1, 1, 0, 1, 2, 2, 0, 0, 3]
    lp = F.one_hot(torch.tensor(path), 4).float().mul(10).log_softmax(-1)
    assert ctc_greedy_decode(lp) == [[1, 1, 2, 3]]
    batch = torch.stack([lp, lp.flip(0)])
    assert ctc_greedy_decode(batch, torch.tensor([9, 4])) == [[1, 1, 2, 3], [3, 2]]


def test_prefix_beam_search_finds_a_more_probable_labelling_than_best_path() -> None:
    # T=2, V=2 (blank, "a"), p(blank)=0.6 each frame: best path ∅∅ gives "" with P=0.36,
    # while P("a") = P(a a) + P(a ∅) + P(∅ a) = 0.16 + 0.24 + 0.24 = 0.64.
    lp = torch.tensor([[0.6, 0.4], [0.6, 0.4]]).log()
    assert ctc_greedy_decode(lp) == [[]]
    beams = ctc_prefix_beam_search(lp, beam_size=2)
    assert beams[0][0] == [1] and beams[0][1] == pytest.approx(math.log(0.64))
    assert beams[1][0] == [] and beams[1][1] == pytest.approx(math.log(0.36))


@pytest.mark.parametrize("seed", range(40))
def test_prefix_beam_search_at_beam_1_equals_greedy(seed: int) -> None:
    """Random frame posteriors as a trained CTC model makes them (one token dominates each frame)."""
    g = torch.Generator().manual_seed(seed)
    T, V = 40, 7
    dominant = torch.randint(0, V, (T,), generator=g)
    dominant[torch.rand(T, generator=g) < 0.4] = 0                       # blanks are frequent
    logits = torch.randn(T, V, generator=g) + 8.0 * F.one_hot(dominant, V)
    lp = logits.log_softmax(-1)
    assert ctc_prefix_beam_search(lp, beam_size=1)[0][0] == ctc_greedy_decode(lp)[0]


@pytest.mark.parametrize("seed", range(3))
def test_prefix_beam_search_scores_are_exact_labelling_probabilities(seed: int) -> None:
    rng = np.random.default_rng(seed)
    lp = torch.tensor(rng.normal(size=(5, 3))).log_softmax(-1).numpy()
    exact = exact_labelling_logprobs(lp)
    beams = ctc_prefix_beam_search(lp, beam_size=1000)                  # no pruning: every prefix survives
    assert {tuple(ids) for ids, _ in beams} == set(exact)
    for ids, score in beams:
        assert score == pytest.approx(exact[tuple(ids)], abs=1e-9)
    assert beams[0][1] == pytest.approx(max(exact.values()))
    # a full-labelling score agrees with the CTC loss of torch
    ids, score = beams[1]
    if ids:
        nll = F.ctc_loss(torch.tensor(lp)[:, None], torch.tensor([ids]), torch.tensor([5]), torch.tensor([len(ids)]),
                         reduction="sum")
        assert -nll.item() == pytest.approx(score, abs=1e-6)
    assert ctc_prefix_beam_search(lp, beam_size=3, token_prune=2)[0][0]  # pruned search still returns


def test_ctc_prefix_scorer_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    T, V, eos = 5, 4, 3                      # ids: 0 blank, 1..2 tokens, 3 plays eos (never emitted by CTC)
    lp = torch.tensor(rng.normal(size=(T, V))).log_softmax(-1)
    lp[:, eos] = -1e9
    lp = lp.log_softmax(-1)
    exact = exact_labelling_logprobs(lp[:, :3].numpy())  # eos has ~0 probability: drop it from the enumeration
    scorer = CTCPrefixScorer(lp, blank=0, eos=eos)
    r = scorer.initial_state()[None]
    prefix: tuple[int, ...] = ()
    for c in (1, 2, 2):
        psi, r_next = scorer.extend(r, torch.tensor([prefix[-1] if prefix else -1]), torch.tensor([c]))
        prefix += (c,)
        with_prefix = [v for k, v in exact.items() if k[: len(prefix)] == prefix]
        assert psi.item() == pytest.approx(float(np.logaddexp.reduce(with_prefix)), abs=1e-6)
        r = r_next
    psi_eos, _ = scorer.extend(r, torch.tensor([2]), torch.tensor([eos]))
    assert psi_eos.item() == pytest.approx(exact[prefix], abs=1e-6)     # p_ctc(h | x) of the whole labelling


def test_length_penalty() -> None:
    assert length_penalty(1, 0.0) == 1.0 and length_penalty(1, 1.0) == 1.0
    assert length_penalty(7, 0.5) == pytest.approx(math.sqrt(2.0))


@pytest.fixture(scope="module")
def trained():
    model, tok, feats, lengths, hyps = train_tiny_transformer()
    assert cer(TEXTS, hyps) <= 0.05, hyps
    return model, tok, feats, lengths


def test_attention_beam_search_ends_at_eos_and_equals_greedy_at_beam_1(trained) -> None:
    model, tok, feats, lengths = trained
    greedy = attention_greedy_decode(model, feats, lengths, tok.sos_id, tok.eos_id)
    for b, text in enumerate(TEXTS):
        x, n = feats[b:b + 1, : lengths[b]], lengths[b:b + 1]
        hyps = attention_beam_search_hyps(model, x, n, tok.sos_id, tok.eos_id, beam_size=4, alpha=0.6)
        assert hyps[0].ended and tok.decode(hyps[0].tokens) == text
        assert [h.normalized for h in hyps] == sorted((h.normalized for h in hyps), reverse=True)
        one = attention_beam_search(model, x, n, tok.sos_id, tok.eos_id, beam_size=1)
        assert one == greedy[b]
        rescored = attention_beam_search_hyps(model, x, n, tok.sos_id, tok.eos_id, beam_size=4, ctc_weight=0.3)
        assert rescored[0].ended and tok.decode(rescored[0].tokens) == text


def test_attention_beam_1_equals_greedy_when_nothing_ends() -> None:
    torch.manual_seed(3)
    model = TransformerASR(N_MELS, 12, d_model=32, num_heads=4, enc_layers=1, dec_layers=1, d_ff=64,
                           dropout=0.0, ctc_weight=0.3).eval()
    feats = torch.randn(1, 60, N_MELS)
    greedy = attention_greedy_decode(model, feats, None, sos=1, eos=2, max_len=6)[0]
    hyps = attention_beam_search_hyps(model, feats, None, sos=1, eos=2, beam_size=1, max_len=6)
    assert hyps[0].tokens == greedy
    assert all(t not in (0, 1) for t in greedy)                          # never blank or sos
    assert len(attention_beam_search_hyps(model, feats, None, 1, 2, beam_size=3, max_len=6, ctc_weight=0.5)) >= 1
    with pytest.raises(ValueError, match="one utterance"):
        attention_beam_search(model, torch.randn(2, 60, N_MELS), None, 1, 2)


def test_ctc_prefix_scorer_closed_form_matches_frame_recursion_on_long_input() -> None:
    """The logcumsumexp solution equals the frame-by-frame recursion of Watanabe et al. 2017 (T = 300)."""
    torch.manual_seed(0)
    T, V, eos = 300, 9, 2
    lp = (3 * torch.randn(T, V)).double().log_softmax(-1)
    scorer = CTCPrefixScorer(lp, blank=0, eos=eos)
    r = scorer.initial_state()[None]
    last = -1
    for c in (4, 4, 7, 5):
        psi, r_h = scorer.extend(r, torch.tensor([last]), torch.tensor([c]))
        ref = torch.full((T + 1, 2), float("-inf"), dtype=torch.float64)
        phi = torch.logaddexp(r[0, :-1, 1], r[0, :-1, 0] if last != c else torch.full((T,), float("-inf")))
        for t in range(T):
            ref[t + 1, 0] = torch.logaddexp(ref[t, 0], phi[t]) + lp[t, c]
            ref[t + 1, 1] = torch.logaddexp(ref[t, 0], ref[t, 1]) + lp[t, 0]
        finite = torch.isfinite(ref)
        assert (r_h[0][~finite] < -1e5).all()                  # impossible states: -inf (or negligible)
        torch.testing.assert_close(r_h[0][finite], ref[finite], atol=1e-8, rtol=1e-10)
        assert psi.item() == pytest.approx(torch.logsumexp(phi + lp[:, c], 0).item(), abs=1e-9)
        r, last = r_h, c
