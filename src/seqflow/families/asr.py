"""What the speech-recognition families (:mod:`.ctc`, :mod:`.transformer`) share: transcriber
package (weights + tokenizer), WER/CER on the test split and on every ``asr`` evaluation set,
the pyfunc, and the optimiser settings of their LightningModules."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from seqflow.families import Evaluation, ModelFamily, Packaged

log = logging.getLogger("seqflow.evaluate")


def package(cfg: DictConfig, checkpoint: str | Path, shards: dict, out: Path) -> Packaged:
    """Transcriber package (net weights, model config, tokenizer) in ``out``."""
    from seqflow.lit.factory import load_net_from_checkpoint
    from seqflow.serve.transcriber import save_transcriber

    net = load_net_from_checkpoint(cfg, checkpoint, tokenizer_dir=shards["tokenizer_dir"])
    save_transcriber(out, net, OmegaConf.to_container(cfg.model, resolve=True), shards["tokenizer_dir"])
    return Packaged()


def evaluate(cfg: DictConfig, package_dir: Path, shards: dict, out: Path) -> Evaluation:
    """WER and CER of the package on the test split (per source, hypotheses table) and sets."""
    from seqflow.evaluate.asr import evaluate_asr, hypotheses_table
    from seqflow.evaluate.on_sets import asr_on_set, halves, prefixed
    from seqflow.evaluate.sets import load_eval_sets, set_tags, split_content_hash
    from seqflow.serve.transcriber import load_transcriber
    from seqflow.shards.reader import iter_samples

    transcriber = load_transcriber(package_dir)
    samples = list(iter_samples(shards["index"]["test"]))
    metrics, rows = evaluate_asr(transcriber, iter(samples))
    metrics = {k: float(v) for k, v in metrics.items()}
    tables = [Path(hypotheses_table(rows, out / "hypotheses.md"))]
    log.info("test: WER %.3f CER %.3f over %.2f h", metrics["test/wer"], metrics["test/cer"], metrics["test/hours"])
    sets = load_eval_sets(cfg.evaluate.sets, kind="asr")
    for es in sets:
        for half in halves(cfg):
            m, set_rows = asr_on_set(transcriber, es, half)
            if set_rows:
                suffix = "" if half == "eval" else f"_{half}"
                tables.append(Path(hypotheses_table(set_rows, out / f"hypotheses_{es.name}{suffix}.md")))
                log.info("%s/%s: WER %.3f CER %.3f over %d utterances", half, es.name, m["wer"], m["cer"],
                         m["num_utterances"])
            metrics.update(prefixed(es.name, m, half))
    tags = {"eval.test_set": split_content_hash(samples), **set_tags(sets)}
    return Evaluation(metrics, {"evaluation": tables}, {}, tags)


def log_model(package_dir: Path, example):
    from seqflow.tracking.pyfunc import log_asr_model

    return log_asr_model(package_dir, example)


def module_kwargs(cfg: DictConfig) -> dict:
    """``features``, ``spec_augment`` and the Noam/optimiser keywords every ASR module takes."""
    o, spec = cfg.model.optim, cfg.model.get("spec_augment")
    return dict(features=OmegaConf.to_container(cfg.model.features, resolve=True),
                spec_augment=OmegaConf.to_container(spec, resolve=True) if spec else None,
                lr=float(o.lr), weight_decay=float(o.get("weight_decay", 0.0)),
                warmup_steps=int(o.get("warmup_steps", 200)), scheduler=str(o.get("scheduler", "noam")))


def asr_family(name: str, build_net, build_module) -> ModelFamily:
    """A speech-recognition family: utterance shards, the shared package/evaluate/pyfunc."""
    return ModelFamily(name=name, kind="asr", shards="utterances", build_net=build_net, build_module=build_module,
                       package=package, evaluate=evaluate, log_model=log_model)
