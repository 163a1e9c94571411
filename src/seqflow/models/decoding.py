"""ASR decoders: CTC greedy and prefix beam search; attention greedy and beam search with CTC rescoring.

- CTC best path (greedy): argmax per frame, merge repeats, drop blanks (Graves et al. 2006 §3.2).
- CTC prefix beam search (Hannun et al. 2014, arXiv:1408.2873, Algorithm 1 without a language model):
  each prefix keeps log P(prefix, path ends in blank) and log P(prefix, path ends in non-blank).
- Attention beam search with length normalization ``lp(Y) = ((5 + |Y|) / 6)^alpha`` (Wu et al. 2016 §7) and
  optional CTC prefix scores ``(1 - λ) log p_att + λ log p_ctc`` (Watanabe et al. 2017 §3.3, Algorithm 2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

NEG_INF = float("-inf")


def _lse(*xs: float) -> float:
    """log(sum(exp(x))) of Python floats, -inf safe."""
    m = max(xs)
    return m if m == NEG_INF else m + math.log(sum(math.exp(x - m) for x in xs))


def ctc_greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor | None = None, blank: int = 0) -> list[list[int]]:
    """Best-path decoding of ``log_probs (T, V)`` or ``(B, T, V)``; ``lengths (B,)`` valid frames.

    Returns one token-id list per utterance (repeats merged, then blanks removed).
    """
    lp = torch.as_tensor(log_probs)
    if lp.dim() == 2:
        lp = lp[None]
    best = lp.argmax(dim=-1).cpu()  # (B, T)
    out = []
    for b in range(best.shape[0]):
        path = best[b, : int(lengths[b])] if lengths is not None else best[b]
        keep = torch.ones_like(path, dtype=torch.bool)
        keep[1:] = path[1:] != path[:-1]
        out.append([int(t) for t in path[keep & (path != blank)]])
    return out


def ctc_prefix_beam_search(log_probs: torch.Tensor | np.ndarray, beam_size: int = 8, blank: int = 0,
                           token_prune: int | None = None) -> list[tuple[list[int], float]]:
    """CTC prefix beam search over one utterance's ``log_probs (T, V)`` (Hannun et al. 2014).

    Args:
        log_probs: frame log-probabilities (only the valid frames). beam_size: prefixes kept per frame.
        token_prune: consider only the ``token_prune`` most probable tokens per frame (``None``: all V).
    Returns up to ``beam_size`` ``(token_ids, log P(labelling))`` pairs, most probable first.

    Unlike best path, it sums over all paths of a labelling, so it can find a more probable labelling:
    with T=2 frames, p(blank)=0.6 and p(a)=0.4 each, best path gives "" (0.36) while P("a") = 0.64.
    At ``beam_size=1`` it keeps the single most probable prefix per frame; that equals best path when
    the posteriors are peaky (one token dominates each frame, as after CTC training), not in general.
    """
    lp = log_probs.detach().cpu().double().numpy() if isinstance(log_probs, torch.Tensor) else np.asarray(
        log_probs, dtype=np.float64)
    T, V = lp.shape
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, NEG_INF)}  # prefix -> (log p_b, log p_nb)
    for t in range(T):
        frame = lp[t].tolist()  # Python floats: much faster than numpy scalars in this loop
        tokens = range(V) if token_prune is None or token_prune >= V else np.argpartition(-lp[t], token_prune)[
            :token_prune].tolist()
        nxt: dict[tuple[int, ...], list[float]] = {}

        def add(prefix: tuple[int, ...], i: int, value: float) -> None:
            entry = nxt.setdefault(prefix, [NEG_INF, NEG_INF])
            entry[i] = _lse(entry[i], value)

        for prefix, (p_b, p_nb) in beams.items():
            add(prefix, 0, _lse(p_b, p_nb) + frame[blank])           # blank: prefix unchanged
            last = prefix[-1] if prefix else None
            for c in tokens:
                if c == blank:
                    continue
                p_c = frame[c]
                if c == last:
                    add(prefix, 1, p_nb + p_c)                        # repeat merges into the prefix
                    add(prefix + (c,), 1, p_b + p_c)                  # blank-separated repeat extends it
                else:
                    add(prefix + (c,), 1, _lse(p_b, p_nb) + p_c)
        scored = [(prefix, v, _lse(*v)) for prefix, v in nxt.items()]
        ranked = sorted((e for e in scored if e[2] > NEG_INF), key=lambda e: e[2], reverse=True)[:beam_size]
        beams = {prefix: (v[0], v[1]) for prefix, v, _ in ranked}  # impossible prefixes (-inf) are dropped
    ranked = sorted(beams.items(), key=lambda kv: _lse(*kv[1]), reverse=True)
    return [(list(prefix), _lse(*v)) for prefix, v in ranked]


class CTCPrefixScorer:
    """CTC prefix score log p_ctc(h, …) of growing hypotheses (Watanabe et al. 2017 Algorithm 2),
    vectorized over candidate extensions. State of a prefix g: ``r (T+1, 2)`` = log forward variables
    (non-blank, blank) with row 0 standing for time -1.

    Args: ``log_probs (T, V)`` CTC log-probabilities of one utterance (valid frames only), blank, eos ids.
    """

    def __init__(self, log_probs: torch.Tensor, blank: int, eos: int) -> None:
        self.x = log_probs.detach().double()
        self.T, self.blank, self.eos = self.x.shape[0], blank, eos

    def initial_state(self) -> torch.Tensor:
        """``r`` of the empty prefix (sos): all paths blank, log r^b_t = Σ_{τ≤t} x_τ(blank)."""
        r = torch.full((self.T + 1, 2), NEG_INF, dtype=torch.float64)
        r[0, 1] = 0.0
        r[1:, 1] = torch.cumsum(self.x[:, self.blank], 0)
        return r

    def extend(self, r_g: torch.Tensor, last: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores of h = g + c for M candidates: ``r_g (M, T+1, 2)``, ``last (M,)`` last token of g (-1 if
        empty), ``c (M,)``. Returns ``(psi (M,), r_h (M, T+1, 2))`` with ``psi = log p_ctc(h, …)``, or the
        full-sequence probability ``log p_ctc(g)`` where ``c == eos``.

        The recursions ``r^n_t(h) = (r^n_{t-1}(h) + Φ_t) x_t(c)`` and ``r^b_t(h) = (r^b_{t-1}(h) + r^n_{t-1}(h))
        x_t(blank)`` are linear, so they are solved in closed form with cumulative sums and
        ``logcumsumexp`` over t instead of a Python loop over frames.
        """
        M = c.shape[0]
        xc = self.x[:, c.clamp(min=0)].T.clamp(min=-1e4)                     # (M, T), finite
        xb = self.x[:, self.blank].clamp(min=-1e4)[None].expand(M, -1)       # (M, T)
        same = (last == c)[:, None]
        phi = torch.logaddexp(r_g[:, :-1, 1], torch.where(same, NEG_INF, r_g[:, :-1, 0]))  # (M, T): Φ_t
        psi = torch.logsumexp(phi + xc, dim=1)
        psi = torch.where(c == self.eos, torch.logaddexp(r_g[:, -1, 0], r_g[:, -1, 1]), psi)
        r_n = self._linear_recursion(phi, xc)                                # (M, T): r^n_t(h)
        r_n_prev = torch.cat([torch.full((M, 1), NEG_INF, dtype=r_n.dtype), r_n[:, :-1]], 1)
        r_b = self._linear_recursion(r_n_prev, xb)
        r_h = torch.full((M, self.T + 1, 2), NEG_INF, dtype=torch.float64)
        r_h[:, 1:, 0], r_h[:, 1:, 1] = r_n, r_b
        return psi, r_h

    @staticmethod
    def _linear_recursion(inp: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``y_t = logaddexp(y_{t-1}, inp_t) + x_t`` with ``y_{-1} = -inf``, over the last dim:
        ``y_t = C_t + logcumsumexp_τ≤t(inp_τ - C_{τ-1})`` with ``C_t = Σ_{s≤t} x_s``."""
        C = torch.cumsum(x, dim=1)
        C_prev = torch.cat([torch.zeros_like(C[:, :1]), C[:, :-1]], 1)
        return C + torch.logcumsumexp(inp - C_prev, dim=1)


@dataclass
class Hypothesis:
    """A decoded sequence: ``tokens`` (no sos/eos), raw ``score`` (log), ``normalized`` score, ``ended`` at eos."""
    tokens: list[int]
    score: float
    normalized: float
    ended: bool


def length_penalty(length: int, alpha: float) -> float:
    """``((5 + length) / 6) ** alpha`` (Wu et al. 2016 §7); 1 at alpha = 0."""
    return ((5.0 + length) / 6.0) ** alpha


@torch.no_grad()
def attention_greedy_decode(model, feats: torch.Tensor, lengths: torch.Tensor | None, sos: int, eos: int,
                            max_len: int | None = None, blank: int = 0) -> list[list[int]]:
    """Greedy decoding of a :class:`~seqflow.models.asr_transformer.TransformerASR` for ``feats (B, T, F)``.

    Picks the most probable token (never blank or sos) until eos or ``max_len`` (default T') tokens.
    Returns one token-id list per utterance, without sos/eos.
    """
    memory, mem_lengths, _ = model.encode(feats, lengths)
    B = memory.shape[0]
    max_len = max_len or max(1, memory.shape[1])
    tokens = torch.full((B, 1), sos, dtype=torch.long, device=memory.device)
    done = torch.zeros(B, dtype=torch.bool, device=memory.device)
    for _ in range(max_len):
        logp = model.decode_step(tokens, memory, mem_lengths)
        logp[:, [blank, sos]] = NEG_INF
        nxt = logp.argmax(-1)
        tokens = torch.cat([tokens, torch.where(done, torch.full_like(nxt, eos), nxt)[:, None]], 1)
        done |= nxt == eos
        if bool(done.all()):
            break
    out = []
    for row in tokens[:, 1:].tolist():
        out.append(row[: row.index(eos)] if eos in row else row)
    return out


@torch.no_grad()
def attention_beam_search_hyps(model, feats: torch.Tensor, lengths: torch.Tensor | None, sos: int, eos: int,
                               beam_size: int = 4, max_len: int | None = None, alpha: float = 0.6,
                               ctc_weight: float = 0.0, blank: int = 0) -> list[Hypothesis]:
    """Beam search of one utterance ``feats (1, T, F)``; returns hypotheses best first (by normalized score).

    Each step, every live hypothesis proposes its ``beam_size`` best next tokens (``ceil(1.5 beam)`` when
    CTC-rescoring); the ``beam_size`` best candidates by score ``(1-λ) log p_att + λ log p_ctc`` survive,
    and those ending in eos leave the beam (it shrinks). Finished hypotheses are ranked by
    ``score / lp(|Y| + 1)``. Stops when no live hypothesis remains, when no live one can beat the best
    finished one, or after ``max_len`` tokens (default T'; unfinished hypotheses are returned with
    ``ended=False``). ``ctc_weight`` > 0 requires the model's CTC head.
    """
    if feats.shape[0] != 1:
        raise ValueError(f"attention_beam_search decodes one utterance at a time, got batch {feats.shape[0]}")
    memory, mem_lengths, ctc_lp = model.encode(feats, lengths)
    max_len = max_len or max(1, int(mem_lengths[0]))
    scorer = None
    if ctc_weight > 0:
        if ctc_lp is None:
            raise ValueError("ctc_weight > 0 needs a model with a CTC head (TransformerASR(ctc_weight>0))")
        scorer = CTCPrefixScorer(ctc_lp[0, : int(mem_lengths[0])], blank, eos)
    n_cand = min(model.vocab_size, math.ceil(1.5 * beam_size) if scorer else beam_size)
    # live hypotheses: token prefixes (sos first), their attention log-probs and CTC states
    live = [[sos]]
    att = torch.zeros(1, dtype=torch.float64)
    ctc_state = scorer.initial_state()[None] if scorer else None
    finished: list[Hypothesis] = []
    for step in range(max_len):
        N = len(live)
        tokens = torch.tensor(live, dtype=torch.long, device=memory.device)
        logp = model.decode_step(tokens, memory.expand(N, -1, -1), mem_lengths.expand(N)).double().cpu()
        logp[:, [blank, sos]] = NEG_INF
        top_lp, top_tok = logp.topk(n_cand, dim=-1)                       # (N, n_cand)
        src = torch.arange(N)[:, None].expand(N, n_cand).reshape(-1)
        cand_tok, cand_att = top_tok.reshape(-1), (att[:, None] + top_lp).reshape(-1)
        if scorer is not None:
            last = torch.tensor([p[-1] if len(p) > 1 else -1 for p in live])[src]
            psi, r_h = scorer.extend(ctc_state[src], last, cand_tok)
            cand_score = (1 - ctc_weight) * cand_att + ctc_weight * psi
        else:
            psi, r_h, cand_score = None, None, cand_att
        order = torch.argsort(cand_score, descending=True)[:beam_size]
        keep, new_live = [], []
        for j in order.tolist():
            prefix = live[int(src[j])] + [int(cand_tok[j])]
            if int(cand_tok[j]) == eos:
                s = float(cand_score[j])
                finished.append(Hypothesis(prefix[1:-1], s, s / length_penalty(len(prefix) - 1, alpha), True))
            else:
                keep.append(j)
                new_live.append(prefix)
        if not keep:
            break
        live, att = new_live, cand_att[keep]
        if scorer is not None:
            ctc_state = r_h[keep]
        raw = cand_score[keep]
        if finished:
            best_finished = max(h.normalized for h in finished)
            if float(raw.max()) / length_penalty(max_len + 1, alpha) < best_finished:
                break  # scores only fall with length: no live hypothesis can overtake
    else:
        for prefix, s in zip(live, raw.tolist()):
            finished.append(Hypothesis(prefix[1:], s, s / length_penalty(len(prefix), alpha), False))
    return sorted(finished, key=lambda h: h.normalized, reverse=True)


def attention_beam_search(model, feats: torch.Tensor, lengths: torch.Tensor | None, sos: int, eos: int,
                          beam_size: int = 4, max_len: int | None = None, alpha: float = 0.6,
                          ctc_weight: float = 0.0, blank: int = 0) -> list[int]:
    """Best token ids (no sos/eos) for one utterance ``feats (1, T, F)``; see :func:`attention_beam_search_hyps`."""
    return attention_beam_search_hyps(model, feats, lengths, sos, eos, beam_size, max_len, alpha, ctc_weight,
                                      blank)[0].tokens
