"""Compose the Hydra config shipped in ``seqflow/conf`` (Hydra's compose API, no output dirs).

>>> cfg = load_config(["data.trigger_word=hello", "ray.num_workers=2"])
>>> cfg.model.registered_name
'seqflow-trigger-word-hello'
"""

from __future__ import annotations

import os
import re

from hydra import compose, initialize_config_module
from omegaconf import DictConfig, OmegaConf



def slug(text: str) -> str:
    """``"Hey Jarvis!"`` → ``"hey-jarvis"``: lower case, runs of non-word characters → ``-``
    (letters of any script are kept); ``"x"`` when nothing is left."""
    return re.sub(r"[\W_]+", "-", str(text).lower()).strip("-") or "x"


if not OmegaConf.has_resolver("abspath"):
    OmegaConf.register_new_resolver("abspath", lambda p: os.path.abspath(str(p)))
if not OmegaConf.has_resolver("slug"):
    OmegaConf.register_new_resolver("slug", slug)


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


def split_model_list(overrides: list[str]) -> tuple[list[str], list[str]]:
    """``model=[trigger_word,ctc]`` → (``["trigger_word", "ctc"]``, the other overrides); a
    single ``model=x`` or none → (``["x"]`` or ``[]``, the overrides unchanged)."""
    models, rest = [], []
    for o in overrides:
        key, _, value = o.partition("=")
        if key == "model" and value.startswith("[") and value.endswith("]"):
            models += [m.strip() for m in value[1:-1].split(",") if m.strip()]
        else:
            rest.append(o)
    return models, rest
