"""Model families: each declared once, and every stage asks the declaration (DESIGN §6).

A :class:`ModelFamily` says, for one model family: what its shards hold (``clips`` with segment
times, or transcribed ``utterances``), how its net and LightningModule are built, how the serving
package is built from the best checkpoint (``package``: for the trigger word this is where the
threshold is calibrated on val), how that same package is evaluated (``evaluate``: test split +
evaluation sets) and how it is logged as an MLflow pyfunc (``log_model``).

``cfg.model.family`` names the module that declares it (``FAMILY`` in that module), so adding a
model is one module plus one YAML in ``conf/model/`` — nothing else dispatches on model names::

    # conf/model/conformer_ctc.yaml
    name: conformer_ctc
    family: mypackage.conformer_ctc     # a module with FAMILY = ModelFamily(...)

The module must be importable on every Ray worker (an installed package, or on ``PYTHONPATH``).

>>> fam = get_family(cfg)
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


SHARD_KINDS = ("clips", "utterances")
KINDS = ("trigger_word", "asr")


@dataclass(frozen=True)
class ModelFamily:
    """One model family's declaration.

    kind: ``trigger_word`` or ``asr``: which evaluation sets apply (``evaluate.sets[*].kinds``)
        and which data sources can feed it.
    shards: ``clips`` (synthesized trigger-word clips with segment times) or ``utterances``
        (transcribed utterances + a tokenizer); models with the same kind share shard sets.
    build_net(cfg, vocab_size) -> nn.Module: the architecture (vocab_size: None without a tokenizer).
    build_module(cfg, net, tokenizer) -> LightningModule: the training logic around ``net``.
    package(cfg, checkpoint_file, shards, out_dir) -> Packaged: write the serving package.
    evaluate(cfg, package_dir, shards, out_dir) -> Evaluation.
    log_model(package_dir, example_wav) -> ModelInfo (inside an active run).
    """

    name: str
    kind: str
    shards: str
    build_net: Callable[..., Any]
    build_module: Callable[..., Any]
    package: Callable[..., Packaged]
    evaluate: Callable[..., Evaluation]
    log_model: Callable[..., Any]

    def __post_init__(self) -> None:
        if self.kind not in KINDS or self.shards not in SHARD_KINDS:
            raise ConfigError(f"model family {self.name!r}: kind must be one of {KINDS} and shards one of "
                              f"{SHARD_KINDS} (got {self.kind!r}, {self.shards!r})")

    @property
    def uses_tokenizer(self) -> bool:
        return self.shards == "utterances"


def get_family(cfg: Any) -> ModelFamily:
    """The family declared by ``cfg.model.family`` (a module path whose ``FAMILY`` it is).

    Raises:
        ConfigError: ``model.family`` unset, not importable, or without a ``FAMILY``.
    """
    import importlib

    path = str(cfg.model.get("family") or "")
    if not path:
        raise ConfigError(f"model {cfg.model.get('name')!r}: set model.family (e.g. seqflow.families.ctc)")
    try:
        module = importlib.import_module(path)
    except ImportError as e:
        raise ConfigError(f"model.family={path!r} cannot be imported ({e})") from e
    fam = getattr(module, "FAMILY", None)
    if not isinstance(fam, ModelFamily):
        raise ConfigError(f"model.family={path!r} declares no FAMILY = ModelFamily(...)")
    return fam
