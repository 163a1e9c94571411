"""Noam learning-rate schedule (Vaswani et al. 2017 §5.3).

lr(step) = factor · d_model^-0.5 · min(step^-0.5, step · warmup^-1.5): linear warm-up for
``warmup_steps`` optimizer steps, then decay ∝ 1/√step; the peak is ``factor · (d_model · warmup)^-0.5``.
"""

from __future__ import annotations

import torch


def noam_lr(step: int, d_model: int, warmup_steps: int, factor: float = 1.0) -> float:
    """Learning rate at optimizer step ``step`` (1-based; step 0 is treated as 1)."""
    step = max(1, int(step))
    return factor * d_model ** -0.5 * min(step ** -0.5, step * warmup_steps ** -1.5)


class NoamLambda:
    """Picklable ``lr_lambda`` for :class:`torch.optim.lr_scheduler.LambdaLR`: returns ``noam_lr(step + 1) / base_lr``
    so that the optimizer's lr follows :func:`noam_lr` whatever lr it was built with.
    """

    def __init__(self, d_model: int, warmup_steps: int, factor: float = 1.0, base_lr: float = 1.0) -> None:
        if warmup_steps < 1:
            raise ValueError(f"warmup_steps must be >= 1, got {warmup_steps}")
        self.d_model, self.warmup_steps, self.factor, self.base_lr = d_model, warmup_steps, factor, base_lr

    def __call__(self, step: int) -> float:
        return noam_lr(step + 1, self.d_model, self.warmup_steps, self.factor) / self.base_lr


def noam_scheduler(optimizer: torch.optim.Optimizer, d_model: int, warmup_steps: int,
                   factor: float = 1.0) -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR`` stepping the optimizer's lr along :func:`noam_lr` (call ``scheduler.step()`` per optimizer step)."""
    base_lr = optimizer.param_groups[0]["lr"]
    if base_lr <= 0:
        raise ValueError(f"the optimizer's lr must be > 0 to be rescaled, got {base_lr}")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, NoamLambda(d_model, warmup_steps, factor, base_lr))
