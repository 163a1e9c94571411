"""Model families: each declared once, and every stage asks the declaration (DESIGN §6).

A :class:`ModelFamily` says, for the models of one family, how the serving package is built from
the best checkpoint (``package``: for the trigger word this is where the threshold is calibrated
on val), how that same package is evaluated (``evaluate``: test split + evaluation sets), how it
is logged as an MLflow pyfunc (``log_model``) and under which registered name. Adding a model is
a module here plus a YAML in ``conf/model/``::

    FAMILIES["conformer_ctc"] = ModelFamily(name="conformer_ctc", kind="asr", ...)

>>> fam = get_family("trigger_word")
>>> packaged = fam.package(cfg, "best.ckpt", shards, Path("pkg"))   # val calibration inside
>>> ev = fam.evaluate(cfg, Path("pkg"), shards, Path("out"))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqflow.errors import ConfigError


@dataclass
class Packaged:
    """What the package step produced: ``metrics`` (e.g. ``val/threshold``) and ``tags`` to log."""

    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    documents: dict[str, dict] = field(default_factory=dict)


@dataclass
class Evaluation:
    """Metrics (``test/*``, ``eval/<set>/*``), files to log (``{artifact folder: [paths]}``),
    JSON documents (``{artifact file: dict}``) and run tags (test-set and eval-set hashes)."""

    metrics: dict[str, float]
    artifacts: dict[str, list[Path]] = field(default_factory=dict)
    documents: dict[str, dict] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelFamily:
    """One model family's declaration.

    kind: ``trigger_word`` or ``asr`` (which evaluation sets apply: ``evaluate.sets[*].kinds``).
    package(cfg, checkpoint_file, shards, out_dir) -> Packaged: write the serving package.
    evaluate(cfg, package_dir, shards, out_dir) -> Evaluation.
    log_model(package_dir, example_wav) -> ModelInfo (inside an active run).
    """

    name: str
    kind: str
    package: Callable[..., Packaged]
    evaluate: Callable[..., Evaluation]
    log_model: Callable[..., Any]


def get_family(model_name: str) -> ModelFamily:
    """The family of ``cfg.model.name``.

    Raises:
        ConfigError: no family declares it.
    """
    from seqflow.families import asr, trigger_word

    families = {"trigger_word": trigger_word.FAMILY, "ctc": asr.FAMILY, "transformer": asr.FAMILY}
    if model_name not in families:
        raise ConfigError(f"model {model_name!r} is unknown; choose one of {sorted(families)}")
    return families[model_name]
