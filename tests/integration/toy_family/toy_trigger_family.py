"""A model family declared outside seqflow, as a user would add one: a different net (one
strided Conv1D and a per-step linear read-out, no GRU) with the trigger-word training logic,
package, evaluation and pyfunc. Selected with ``model.family=toy_trigger_family`` (this folder on
``PYTHONPATH``, which local Ray workers inherit)."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from seqflow.families import trigger_word
from seqflow.models.trigger_word import StepGeometry


class ToyNet(StepGeometry, nn.Module):
    """log-mel ``(B, T, F)`` → logits ``(B, T')``, ``T' = num_steps(T)``; no recurrent state."""

    def __init__(self, n_mels: int, channels: int = 8, conv_kernel: int = 15, conv_stride: int = 4) -> None:
        nn.Module.__init__(self)
        StepGeometry.__init__(self, conv_kernel, conv_stride)
        self.n_mels = n_mels
        self.norm = nn.BatchNorm1d(n_mels)
        self.conv = nn.Conv1d(n_mels, channels, conv_kernel, stride=conv_stride)
        self.out = nn.Linear(channels, 1)

    def forward(self, feats: torch.Tensor, h=None):
        x = torch.relu(self.conv(self.norm(feats.transpose(1, 2))))
        return self.out(x.transpose(1, 2)).squeeze(-1), h


def build_net(cfg, vocab_size=None) -> ToyNet:
    net = cfg.model.net
    return ToyNet(int(cfg.model.features.n_mels), conv_kernel=int(net.conv_kernel), conv_stride=int(net.conv_stride))


FAMILY = replace(trigger_word.FAMILY, name="toy_trigger", build_net=build_net)
