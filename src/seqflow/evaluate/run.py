"""The evaluate stage per model family: score the test split, write plots/tables, and package
the model for serving. Returns plain values; :func:`seqflow.stages.evaluate` logs them to MLflow.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("seqflow.evaluate")


@dataclass
class Evaluation:
    """Test metrics, files to log as artifacts (``{artifact folder: [paths]}``), JSON documents
    to log (``{artifact file: dict}``) and the packaged model folder."""

    metrics: dict[str, float]
    model_dir: Path
    artifacts: dict[str, list[Path]] = field(default_factory=dict)
    documents: dict[str, dict] = field(default_factory=dict)


def evaluate_trigger_word_model(cfg: DictConfig, test_index: str, checkpoint: str, out: Path) -> Evaluation:
    """FRR at fixed FA/h on the test split's continuous audio, DET curve, detector package."""
    from seqflow.evaluate.trigger_word import evaluate_trigger_word, plot_det
    from seqflow.lit.factory import load_net_from_checkpoint
    from seqflow.lit.trigger_word import build_logmel
    from seqflow.serve.detector import TriggerWordDetector, save_detector
    from seqflow.shards.reader import iter_samples

    ev = cfg.evaluate
    net = load_net_from_checkpoint(cfg, checkpoint)
    detector = TriggerWordDetector(net, build_logmel(cfg.model.features), refractory_s=float(ev.refractory_s))
    clips = [(wav, meta["segments"]) for _key, wav, meta in iter_samples(test_index)]
    result = evaluate_trigger_word(detector, clips, thresholds=int(ev.thresholds),
                                   fa_per_hour_targets=list(ev.fa_per_hour_targets), refractory_s=float(ev.refractory_s),
                                   match_tolerance_s=float(ev.match_tolerance_s), label_steps=int(cfg.clips.label_steps))
    curve = result.pop("curve")
    metrics = {k: float(v) for k, v in result.items()}
    det_png = plot_det(curve, out / "det_curve.png", (metrics["test/fa_per_hour"], metrics["test/frr_at_1fah"]))
    model_dir = out / "detector"
    save_detector(model_dir, net, OmegaConf.to_container(cfg.model, resolve=True),
                  threshold=metrics["test/threshold"], refractory_s=float(ev.refractory_s))
    log.info("test: FRR %.3f at 0.5 FA/h, %.3f at 1 FA/h (threshold %.4f) over %.2f h, %d positives",
             metrics["test/frr_at_0.5fah"], metrics["test/frr_at_1fah"], metrics["test/threshold"],
             metrics["test/hours"], metrics["test/num_positives"])
    return Evaluation(metrics, model_dir, {"plots": [det_png]},
                      {"evaluation/det_curve.json": {k: [float(x) for x in v] for k, v in curve.items()}})


def evaluate_asr_model(cfg: DictConfig, test_index: str, checkpoint: str, tokenizer_dir: str,
                       out: Path) -> Evaluation:
    """WER and CER on the test split (unseen voices and sentences), per data source, with a
    table of sample hypotheses; transcriber package (weights + tokenizer)."""
    from seqflow.evaluate.asr import evaluate_asr, hypotheses_table
    from seqflow.lit.factory import load_net_from_checkpoint
    from seqflow.serve.transcriber import load_transcriber, save_transcriber
    from seqflow.shards.reader import iter_samples

    net = load_net_from_checkpoint(cfg, checkpoint, tokenizer_dir=tokenizer_dir)
    model_dir = out / "transcriber"
    save_transcriber(model_dir, net, OmegaConf.to_container(cfg.model, resolve=True), tokenizer_dir)
    transcriber = load_transcriber(model_dir)
    metrics, rows = evaluate_asr(transcriber, iter_samples(test_index))
    metrics = {k: float(v) for k, v in metrics.items()}
    table = hypotheses_table(rows, out / "hypotheses.md")
    log.info("test: WER %.3f CER %.3f over %.2f h", metrics["test/wer"], metrics["test/cer"],
             metrics.get("test/hours", float("nan")))
    return Evaluation(metrics, model_dir, {"evaluation": [Path(table)]})
