"""Compose the Hydra config shipped in ``seqflow/conf`` (Hydra's compose API, no output dirs).

>>> cfg = load_config(["data.trigger_word=hello", "ray.num_workers=2"])
>>> cfg.model.registered_name
'seqflow-trigger-word'
"""

from __future__ import annotations

import os

from hydra import compose, initialize_config_module
from omegaconf import DictConfig, OmegaConf

if not OmegaConf.has_resolver("abspath"):
    OmegaConf.register_new_resolver("abspath", lambda p: os.path.abspath(str(p)))


def load_config(overrides: list[str] | None = None, config_name: str = "config") -> DictConfig:
    """Compose ``seqflow/conf/<config_name>.yaml`` with Hydra overrides and resolve it.

    Raises:
        hydra.errors.ConfigCompositionException / omegaconf errors: unknown group option or key
        (Hydra's own message names it).
    """
    with initialize_config_module(config_module="seqflow.conf", version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=list(overrides or []))
    OmegaConf.resolve(cfg)
    return cfg
