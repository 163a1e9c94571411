"""Fail fast, before any expensive work, with one line: the config schema and the pre-flight checks.

:func:`check_schema` checks the type and range of every config value against
:data:`seqflow.schema.table.SCHEMA` (integers, numbers, booleans, choices, probabilities in
[0, 1], ordered ``[lo, hi]`` ranges, counts >= 1, writable folders) and a few relations between
keys. The schema is a table of rules on the composed Hydra config rather than OmegaConf
structured configs or pydantic models: the config has per-model sections that user model
families extend (``model.family`` modules), which a closed set of dataclasses would reject, while
a rule per dotted key (``*`` for one level) checks what is known and leaves the rest to its family;
every rule renders the same one-line message (``key=value: must be ...``).

The pre-flight checks (:func:`preflight`, after the schema) then ask the machine: local Ray resources
(:mod:`seqflow.schema.resources`), free disk space for the corpus and shards, and whether the
configured voices can speak the trigger word (:mod:`seqflow.schema.speakable`).

>>> from seqflow.config import load_config
>>> check_schema(load_config(["trainer.max_epochs=-1"]))
Traceback (most recent call last):
...
seqflow.errors.ConfigError: trainer.max_epochs=-1: must be an integer >= 1
"""

from __future__ import annotations

import re
from typing import Any, Iterator

from omegaconf import DictConfig, OmegaConf

from seqflow.errors import ConfigError
from seqflow.schema.rules import shown
from seqflow.schema.table import SCHEMA


def flatten(tree: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted key, value)`` for every leaf of a nested dict; lists are leaves."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from flatten(v, f"{prefix}.{k}" if prefix else str(k))
    else:
        yield prefix, tree


def _pattern(key: str) -> re.Pattern:
    return re.compile("^" + r"\.".join("[^.]+" if part == "*" else re.escape(part) for part in key.split(".")) + "$")


_EXACT = {k: r for k, r in SCHEMA.items() if "*" not in k}
_WILD = sorted(((k.count("*"), i, _pattern(k), r) for i, (k, r) in enumerate(SCHEMA.items()) if "*" in k),
               key=lambda t: (t[0], t[1]))


def rule_for(key: str):
    """The rule of a dotted key: its exact entry, else the matching pattern with the fewest ``*``
    (the first in table order on ties); None when the schema has none."""
    if key in _EXACT:
        return _EXACT[key]
    for _, _, pat, rule in _WILD:
        if pat.match(key):
            return rule
    return None


def check_schema(cfg: DictConfig | dict) -> None:
    """Check every config value that has a rule, then the relations between keys.

    Args:
        cfg: the composed config (resolved or not; interpolations are resolved here).

    Raises:
        ConfigError: one line, ``<key>=<value>: must be <what is allowed>``; the first bad key
            in config order.
    """
    raw = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    for key, value in flatten(raw):
        rule = rule_for(key)
        if rule is not None:
            rule.check(key, value)
    _check_relations(raw)


def _get(raw: dict, key: str, default=None):
    node = raw
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def _check_relations(raw: dict) -> None:
    lo, hi = _get(raw, "data.min_duration"), _get(raw, "data.max_duration")
    if lo is not None and hi is not None and lo >= hi:
        raise ConfigError(f"data.min_duration={shown(lo)}: must be < data.max_duration={shown(hi)}")
    dmin, dmax = _get(raw, "augment.rooms.dims_min"), _get(raw, "augment.rooms.dims_max")
    if dmin and dmax and any(a > b for a, b in zip(dmin, dmax)):
        raise ConfigError(f"augment.rooms.dims_min={shown(dmin)}: must be <= augment.rooms.dims_max={shown(dmax)} "
                          "in every dimension")
    clips = _get(raw, "clips") or {}
    if clips.get("label_seconds") is not None and clips.get("duration") is not None \
            and clips["label_seconds"] >= clips["duration"]:
        raise ConfigError(f"clips.label_seconds={shown(clips['label_seconds'])}: must be < clips.duration="
                          f"{shown(clips['duration'])}")


def preflight(cfg: DictConfig) -> None:
    """What the machine must provide (after :func:`check_schema`): local Ray resources, voices
    that can speak the trigger word, disk space for the corpus and shards. Each failure is one line.

    Raises:
        ConfigError: the first failed check
            (:func:`seqflow.schema.resources.check_local_ray_resources`,
            :func:`seqflow.schema.speakable.check_trigger_word_speakable`,
            :func:`seqflow.schema.resources.check_disk_space`).
    """
    from seqflow.schema.resources import check_disk_space, check_local_ray_resources
    from seqflow.schema.speakable import check_trigger_word_speakable

    check_local_ray_resources(cfg)
    check_trigger_word_speakable(cfg)
    check_disk_space(cfg)


def check_overrides(overrides: list[str]) -> None:
    """Compose and check (:func:`seqflow.stages.check_config`) the config of every model that
    ``seqflow pipeline <overrides>`` would train (``model=[a,b]``: one each), without importing
    Prefect, so a bad value fails in about a second.

    Raises:
        ConfigError, Hydra or OmegaConf errors: the first bad value.
    """
    from seqflow import stages
    from seqflow.config import load_config, split_model_list

    models, rest = split_model_list(list(overrides))
    for extra in ([[f"model={m}"] for m in models] or [[]]):
        stages.check_config(load_config(rest + extra))
