"""The trigger-word family: val-calibrated detector package, continuous-stream evaluation.

Package: the best checkpoint's net scores the **val** split's continuous stream; the operating
threshold is the lowest whose false accepts per hour of val negative audio is at most
``evaluate.target_fa_per_hour`` (:func:`seqflow.evaluate.trigger_word.calibrate`), stored in
the package. Evaluate: that package, unchanged, on the test stream (``test/*`` at the stored
threshold, plus the DET sweep as a curve) and on every ``trigger_word`` evaluation set.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from seqflow.families import Evaluation, ModelFamily, Packaged

log = logging.getLogger("seqflow.evaluate")


def matching(cfg: DictConfig):
    from seqflow.evaluate.trigger_word import Matching

    ev = cfg.evaluate
    return Matching(refractory_s=float(ev.refractory_s), window_s=float(cfg.clips.label_seconds),
                    tolerance_s=float(ev.match_tolerance_s))


def _clips(index: str):
    from seqflow.shards.reader import iter_samples

    return ((wav, meta["segments"]) for _key, wav, meta in iter_samples(index))


def _calibration_sets(cfg: DictConfig, detector, match) -> tuple[dict[str, list[float]], dict[str, float]]:
    """FA/h curves (at the sweep's thresholds) of the **dev** halves of ``evaluate.calibration_sets``
    (real speech, real noise: audio the synthetic val stream lacks), and their hours; a set that is
    not configured or whose manifest is absent is skipped with one log line."""
    from seqflow.evaluate.on_sets import negative_streams
    from seqflow.evaluate.sets import load_eval_sets
    from seqflow.evaluate.trigger_word import det_curve

    ev = cfg.evaluate
    wanted = [str(n) for n in (ev.get("calibration_sets") or [])]
    sets = {s.name: s for s in load_eval_sets(ev.sets, kind="trigger_word") if s.name in wanted}
    curves, hours = {}, {}
    for name in wanted:
        if name not in sets:
            log.info("calibration set %s skipped: not among the available trigger_word evaluation sets", name)
            continue
        scored = negative_streams(detector, sets[name], str(cfg.data.trigger_word), half="dev")
        if scored.seconds > 0:
            # no positives or sound-alikes in these streams: every detection is a false accept
            curves[name] = det_curve(scored, match, int(ev.thresholds))["fa_per_hour"]
            hours[name] = scored.seconds / 3600.0
    return curves, hours


def calibrate_on_val(cfg: DictConfig, detector, shards: dict) -> tuple[float, Packaged]:
    """Score the val stream with ``detector`` and choose the operating threshold there: the lowest
    with at most ``evaluate.target_fa_per_hour`` false accepts per hour of negative audio, at most
    ``evaluate.max_confusable_trigger_rate`` of sound-alikes firing, and at most the target FA/h on
    the dev half of each ``evaluate.calibration_sets`` set (``calibration/<set>/*`` metrics).
    Returns ``(threshold, Packaged(val metrics, calibration tags, val DET curve))``; shared by
    every trigger-word family (any detector with ``scores_many``, ``step_s``, ``threshold``)."""
    from seqflow.evaluate.streams import score_clip_streams
    from seqflow.evaluate.trigger_word import calibrate, det_curve, measure

    ev, match = cfg.evaluate, matching(cfg)
    val = score_clip_streams(detector, _clips(shards["index"]["val"]))
    curve = det_curve(val, match, int(ev.thresholds))
    fa_curves, hours = _calibration_sets(cfg, detector, match)
    max_conf = ev.get("max_confusable_trigger_rate")
    cal = calibrate(curve, float(ev.target_fa_per_hour), None if max_conf is None else float(max_conf), fa_curves)
    metrics = measure(val, cal.threshold, match, prefix="val")
    i = curve["thresholds"].index(cal.threshold)
    for name, fah in fa_curves.items():
        metrics.update({f"calibration/{name}/fa_per_hour": fah[i], f"calibration/{name}/hours": hours[name]})
        log.info("calibration: dev half of %s (%.2f h): %.3g FA/h at threshold %.4f", name, hours[name], fah[i],
                 cal.threshold)
    negative_hours = metrics["val/negative_hours"] + sum(hours.values())
    if negative_hours * cal.target_fa_per_hour < 1.0:
        log.warning("calibration holds %.2f h of negative audio (val stream and the dev halves of %s): too little "
                    "to resolve %.3g FA/h (needs >= %.2f h); raise clips.val_clips", negative_hours,
                    sorted(hours) or "no calibration set", cal.target_fa_per_hour, 1.0 / cal.target_fa_per_hour)
    if not cal.met:
        log.warning("calibration: no threshold reaches %.3g FA/h and a sound-alike trigger rate <= %s on val "
                    "(%.2f h of negative audio); using %.4f at %.3g FA/h, sound-alike rate %.3f",
                    cal.target_fa_per_hour, max_conf, metrics["val/negative_hours"], cal.threshold,
                    cal.fa_per_hour, cal.confusable_trigger_rate)
    log.info("val calibration: threshold %.4f → FRR %.3f at %.3g FA/h, sound-alike trigger rate %.3f "
             "(targets %.3g FA/h, %s; %.2f h negative audio)", cal.threshold, cal.frr, cal.fa_per_hour,
             cal.confusable_trigger_rate, cal.target_fa_per_hour, max_conf, metrics["val/negative_hours"])
    return cal.threshold, Packaged(metrics=metrics,
                                   tags={"calibration.met": str(cal.met).lower(),
                                         "calibration.target_fa_per_hour": f"{cal.target_fa_per_hour:g}",
                                         "calibration.max_confusable_trigger_rate": str(max_conf),
                                         "calibration.sets": ",".join(sorted(fa_curves)) or "none"},
                                   documents={"evaluation/val_det_curve.json": curve})


def package(cfg: DictConfig, checkpoint: str | Path, shards: dict, out: Path) -> Packaged:
    """Detector package in ``out`` with the threshold calibrated on val; val metrics and tags."""
    from seqflow.lit.factory import load_net_from_checkpoint
    from seqflow.lit.trigger_word import build_logmel
    from seqflow.serve.detector import TriggerWordDetector, save_detector

    refractory_s = float(cfg.evaluate.refractory_s)
    net = load_net_from_checkpoint(cfg, checkpoint)
    detector = TriggerWordDetector(net, build_logmel(cfg.model.features), refractory_s=refractory_s)
    threshold, packaged = calibrate_on_val(cfg, detector, shards)
    save_detector(out, net, OmegaConf.to_container(cfg.model, resolve=True), threshold=threshold,
                  refractory_s=refractory_s)
    return packaged


def evaluate_detector(cfg: DictConfig, detector, shards: dict, out: Path) -> Evaluation:
    """A loaded detector at its stored (val) threshold on the test stream and on every
    ``trigger_word`` evaluation set; shared by every trigger-word family."""
    from seqflow.evaluate.on_sets import halves, prefixed, trigger_word_on_set
    from seqflow.evaluate.sets import load_eval_sets, set_tags, split_content_hash
    from seqflow.evaluate.streams import score_clip_streams
    from seqflow.evaluate.trigger_word import det_curve, measure, plot_det, sweep_points
    from seqflow.shards.reader import iter_samples

    ev, match = cfg.evaluate, matching(cfg)
    samples = list(iter_samples(shards["index"]["test"]))
    test = score_clip_streams(detector, ((wav, meta["segments"]) for _k, wav, meta in samples))
    metrics = measure(test, detector.threshold, match, prefix="test")
    curve = det_curve(test, match, int(ev.thresholds))
    metrics.update(sweep_points(curve, list(ev.fa_per_hour_targets)))
    tags = {"eval.test_set": split_content_hash(samples)}
    log.info("test at val threshold %.4f: FRR %.3f (%d/%d missed), %.3g FA/h (%d false accepts off sound-alikes "
             "in %.2f h), sound-alike trigger rate %.3f", detector.threshold, metrics["test/frr"],
             metrics["test/num_missed"], metrics["test/num_positives"], metrics["test/fa_per_hour"],
             metrics["test/num_false_accepts"] - metrics["test/num_confusable_false_accepts"],
             metrics["test/negative_hours"], metrics["test/confusable_trigger_rate"])
    sets = load_eval_sets(cfg.evaluate.sets, kind="trigger_word")
    for es in sets:
        for half in halves(cfg):
            m = trigger_word_on_set(detector, es, str(cfg.data.trigger_word), half)
            log.info("%s/%s: detected %s of %d, %d false accepts in %.2f h (%.3g FA/h), sound-alikes fired %d of %d",
                     half, es.name, f"{m['detected']:.3f}" if m["num_positives"] else "n/a", m["num_positives"],
                     m["num_false_accepts"], m["hours"], m["fa_per_hour"], m["num_confusable_triggers"],
                     m["num_confusables"])
            metrics.update(prefixed(es.name, m, half))
    tags.update(set_tags(sets))
    png = plot_det(curve, out / "det_curve.png", (metrics["test/fa_per_hour"], metrics["test/frr"]),
                   title="Trigger-word DET curve (test stream; dot: val-calibrated threshold)")
    return Evaluation(metrics, {"plots": [png]}, {"evaluation/det_curve.json": curve}, tags)


def evaluate(cfg: DictConfig, package_dir: Path, shards: dict, out: Path) -> Evaluation:
    """The package at its stored (val) threshold on the test stream and the evaluation sets."""
    from seqflow.serve.detector import load_detector

    return evaluate_detector(cfg, load_detector(package_dir), shards, out)


def log_model(package_dir: Path, example):
    from seqflow.tracking.pyfunc import log_trigger_word_model

    return log_trigger_word_model(package_dir, example)


def build_net(cfg: DictConfig, vocab_size: int | None = None):
    """The course's detector: Conv1D → BN → ReLU → GRU × 2 → per-step sigmoid (``model.net``)."""
    from seqflow.models.trigger_word import TriggerWordNet

    return TriggerWordNet(n_mels=int(cfg.model.features.n_mels), **OmegaConf.to_container(cfg.model.net, resolve=True))


def build_module(cfg: DictConfig, net, tokenizer=None):
    """Frame BCE against labels derived at load (``clips.label_seconds`` after each positive)."""
    from seqflow.lit.trigger_word import TriggerWordModule

    o = cfg.model.optim
    spec = cfg.model.get("spec_augment")
    return TriggerWordModule(net, OmegaConf.to_container(cfg.model.features, resolve=True),
                             OmegaConf.to_container(spec, resolve=True) if spec else None,
                             lr=float(o.lr), weight_decay=float(o.weight_decay), pos_weight=float(o.pos_weight),
                             scheduler=str(o.get("scheduler", "none")), label_seconds=float(cfg.clips.label_seconds))


FAMILY = ModelFamily(name="trigger_word", kind="trigger_word", shards="clips", build_net=build_net,
                     build_module=build_module, package=package, evaluate=evaluate, log_model=log_model)
