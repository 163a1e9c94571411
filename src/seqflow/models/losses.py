"""ASR losses: CTC (Graves et al. 2006), label-smoothed cross-entropy (Szegedy et al. 2016;
Vaswani et al. 2017 §5.4) and the joint CTC/attention objective (Watanabe et al. 2017).

Padding conventions: CTC targets ``(B, U)`` are padded with anything (only ``target_lengths`` count);
attention targets use ``ignore_index`` (default -100) at padded positions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def ctc_loss(log_probs: torch.Tensor, out_lengths: torch.Tensor, targets: torch.Tensor,
             target_lengths: torch.Tensor, blank: int = 0, reduction: str = "mean") -> torch.Tensor:
    """CTC loss (Graves et al. 2006) of ``log_probs (B, T', V)`` (log_softmax) against padded ``targets (B, U)``.

    Wraps ``F.ctc_loss(log_probs.transpose(0, 1), targets, out_lengths, target_lengths, blank=blank,
    zero_infinity=True)``: an utterance too short for its transcript contributes 0 instead of inf
    (quarantine such utterances up front with :func:`seqflow.models.ctc.ctc_feasible`). ``reduction="mean"``
    divides each utterance's loss by its target length, then averages over the batch.
    Computed in float32 even under autocast. Returns a scalar (``reduction="none"``: ``(B,)``).
    """
    targets = targets.clamp(min=0)  # padding value is irrelevant, but must be a valid index
    return F.ctc_loss(log_probs.float().transpose(0, 1), targets.long(), out_lengths.long(), target_lengths.long(),
                      blank=blank, reduction=reduction, zero_infinity=True)


def label_smoothed_nll(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE_INDEX,
                       smoothing: float = 0.1) -> torch.Tensor:
    """Label-smoothed cross-entropy, mean over non-ignored tokens.

    Args:
        logits: ``(B, U, V)`` decoder outputs (pre-softmax). targets: ``(B, U)`` int, ``ignore_index`` at padding.
        smoothing: ε; the target distribution is ``(1 - ε) one_hot + ε / V`` (uniform over all V).
    Returns a scalar; 0 if every position is ignored.
    """
    V = logits.shape[-1]
    flat_t = targets.reshape(-1).long()
    if not bool((flat_t != ignore_index).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits.reshape(-1, V).float(), flat_t, ignore_index=ignore_index,
                           label_smoothing=smoothing)


def joint_ctc_attention_loss(att_logits: torch.Tensor, att_targets: torch.Tensor,
                             ctc_log_probs: torch.Tensor | None, out_lengths: torch.Tensor | None,
                             targets: torch.Tensor, target_lengths: torch.Tensor, ctc_weight: float = 0.3,
                             smoothing: float = 0.1, blank: int = 0,
                             ignore_index: int = IGNORE_INDEX) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Joint objective ``L = λ L_ctc + (1 - λ) L_att`` (Watanabe et al. 2017, eq. 13 with λ = ``ctc_weight``).

    Args:
        att_logits: ``(B, U+1, V)`` decoder logits for inputs ``[sos, y_1 … y_U]``.
        att_targets: ``(B, U+1)`` ``[y_1 … y_U, eos]``, ``ignore_index`` at padding (see
            :func:`seqflow.models.asr_transformer.add_sos_eos`).
        ctc_log_probs, out_lengths: ``(B, T', V)``, ``(B,)`` from the CTC head (``None`` when λ = 0).
        targets, target_lengths: ``(B, U)`` padded token ids and ``(B,)`` lengths (no sos/eos).
    Returns ``(loss, {"att": L_att, "ctc": L_ctc})`` (L_ctc is 0 when λ = 0).
    """
    att = label_smoothed_nll(att_logits, att_targets, ignore_index=ignore_index, smoothing=smoothing)
    if ctc_weight <= 0.0 or ctc_log_probs is None:
        return att, {"att": att.detach(), "ctc": torch.zeros((), device=att.device)}
    ctc = ctc_loss(ctc_log_probs, out_lengths, targets, target_lengths, blank=blank)
    loss = ctc_weight * ctc + (1.0 - ctc_weight) * att
    return loss, {"att": att.detach(), "ctc": ctc.detach()}
