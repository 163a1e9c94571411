"""Build the configured network and LightningModule from the seqflow config (one place)."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from seqflow.errors import ConfigError


def build_net(cfg: DictConfig) -> nn.Module:
    """The architecture of ``cfg.model`` as a plain ``nn.Module``."""
    if cfg.model.name == "trigger_word":
        from seqflow.models.trigger_word import TriggerWordNet

        return TriggerWordNet(n_mels=int(cfg.model.features.n_mels), **OmegaConf.to_container(cfg.model.net))
    raise ConfigError(f"unknown model {cfg.model.name!r}")


def build_module(cfg: DictConfig):
    """The LightningModule (training logic) around :func:`build_net`."""
    net = build_net(cfg)
    if cfg.model.name == "trigger_word":
        from seqflow.lit.trigger_word import TriggerWordModule

        o = cfg.model.optim
        return TriggerWordModule(net, OmegaConf.to_container(cfg.model.features),
                                 OmegaConf.to_container(cfg.model.spec_augment),
                                 lr=float(o.lr), weight_decay=float(o.weight_decay),
                                 pos_weight=float(o.pos_weight), scheduler=str(o.get("scheduler", "none")))
    raise ConfigError(f"unknown model {cfg.model.name!r}")


def load_net_from_checkpoint(cfg: DictConfig, checkpoint_file: str | Path) -> nn.Module:
    """The trained ``net`` from a Lightning checkpoint (``state_dict`` keys ``net.*``), in eval mode."""
    state = torch.load(checkpoint_file, map_location="cpu", weights_only=False)["state_dict"]
    net = build_net(cfg)
    net.load_state_dict({k[len("net."):]: v for k, v in state.items() if k.startswith("net.")})
    return net.eval()
