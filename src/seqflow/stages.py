"""The pipeline's stages as plain functions (no Prefect here), so each is callable and testable
on its own; :mod:`seqflow.flow` wraps each one in a Prefect task.

Every stage takes the composed config (``DictConfig``) and returns plain JSON-able dicts.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

from omegaconf import DictConfig

from seqflow.errors import ConfigError

log = logging.getLogger("seqflow.pipeline")


def check_config(cfg: DictConfig) -> None:
    """Fail fast, before any work, on config values that cannot work.

    Raises:
        ConfigError: one line naming the key, the value and what is allowed: a value of the wrong
        type or out of range (:func:`seqflow.schema.check_schema`), unknown data source, a model.family that cannot be
        imported, empty trigger word, unknown voice, bad worker counts, a trigger-word model on a source without
        trigger-word labels, bad ``clips.hard_negative_mining``; then what the machine lacks
        (:func:`seqflow.schema.preflight`): local Ray CPUs/GPUs, voices that can speak the trigger word, disk space.
    """
    from seqflow.data.sources import check_source_config
    from seqflow.families import get_family
    from seqflow.schema import check_schema, preflight

    check_schema(cfg)  # types and ranges of every value first: the checks below may int() them
    fam = get_family(cfg)
    if int(cfg.ray.num_workers) < 1 or int(cfg.trainer.num_workers) < 0:
        raise ConfigError("ray.num_workers must be >= 1 and trainer.num_workers >= 0")
    if fam.kind == "trigger_word" and not (
            cfg.data.source == "synthetic" or (cfg.data.source == "speech_commands" and cfg.data.get("trigger_word"))):
        raise ConfigError(f"model={cfg.model.name} needs data=synthetic, or data=speech_commands with "
                          "data.trigger_word=<word> (its folder holds the positives)")
    if fam.kind != "trigger_word" and cfg.data.source == "speech_commands" and cfg.data.get("trigger_word"):
        raise ConfigError(f"model={cfg.model.name} needs transcribed utterances; unset data.trigger_word")
    check_source_config(cfg.data, int(cfg.audio.sample_rate))
    from seqflow.mining import MiningConfig

    MiningConfig.from_config(cfg)  # bad clips.hard_negative_mining values fail here, not after round 1
    from seqflow.train.launcher import check_ray_config

    check_ray_config(cfg)  # bad ray.* values fail before prepare, not at the train stage
    preflight(cfg)  # local Ray resources, speakable trigger word, disk space for corpus and shards


def prepare(cfg: DictConfig) -> Path:
    """Build or ingest the corpus under ``cfg.data.root``, then the ``heldout_engine`` evaluation
    set (festival; outside ``data/``, never trained on); returns the corpus manifest path."""
    from seqflow.data.sources import prepare_source
    from seqflow.evaluate.heldout import build_heldout_set

    manifest = prepare_source(cfg.data, int(cfg.audio.sample_rate), int(cfg.seed))
    build_heldout_set(cfg)
    return manifest


def check_eval_sets(cfg: DictConfig) -> dict:
    """Every configured evaluation set that exists has all its audio files (an error before
    training, not after); returns ``{set name: number of utterances}``."""
    from seqflow.evaluate.sets import check_eval_sets as check, load_eval_sets

    sets = load_eval_sets(cfg.evaluate.sets)
    check(sets)
    return {es.name: len(es.rows) for es in sets}


def validate(cfg: DictConfig) -> dict:
    """Decode every file once, quarantine bad ones; raises ``DataValidationError`` past the limit.

    Returns ``{"total", "valid", "quarantined", "reasons", "dropped", "dropped_reasons",
    "bad_fraction"}``: files checked, kept and quarantined here (per reason), and the items the
    source dropped at prepare (missing files, unread formats, …; per reason), which count against
    ``data.max_bad_fraction`` too (:meth:`seqflow.data.validate.ValidationReport.counts`)."""
    from seqflow.data.validate import validate_corpus

    d = cfg.data
    report = validate_corpus(Path(d.root), min_duration=float(d.min_duration), max_duration=float(d.max_duration),
                             max_bad_fraction=float(d.max_bad_fraction), sample_rate=int(cfg.audio.sample_rate))
    return report.counts()


def validate_record(counts: dict) -> dict:
    """What the validate stage found, for the training run (:func:`seqflow.tracking.artifacts.log_results`
    keywords): metrics ``data/files_total``, ``data/files_valid``, ``data/quarantined``,
    ``data/dropped`` (items the source dropped at prepare) and ``data/bad_fraction``; the counts per
    reason as the JSON document ``data/validate.json``."""
    metrics = {f"data/{name}": counts[key] for name, key in (("files_total", "total"), ("files_valid", "valid"),
                                                             ("quarantined", "quarantined"), ("dropped", "dropped"),
                                                             ("bad_fraction", "bad_fraction")) if key in counts}
    return {"metrics": metrics, "documents": {"data/validate.json": counts}}


def version(cfg: DictConfig) -> dict:
    """``dvc add`` + ``dvc push`` the corpus; returns ``{"md5", "git_commit", "dvc_file"}``."""
    from seqflow.data.dvc import git_commit, version_data

    root = Path(cfg.workdir)
    data_dir = Path(cfg.data.root).relative_to(root)
    v = version_data(root, data_dir=str(data_dir), remote_name=cfg.data.dvc.remote_name,
                     remote_url=str(cfg.data.dvc.remote_url))
    return {"md5": v.md5, "git_commit": git_commit(root), "dvc_file": str(v.dvc_file)}


def shard(cfg: DictConfig, data_md5: str) -> dict:
    """Write (or reuse) WebDataset shards for train/val/test; returns the shard set as a dict."""
    from seqflow.shards.writer import shard_dataset

    s = shard_dataset(cfg, Path(cfg.data.root), data_md5)
    return {"root": str(s.root), "index": {k: str(v) for k, v in s.index_paths.items()},
            "num_samples": dict(s.num_samples), "tokenizer_dir": str(s.tokenizer_dir) if s.tokenizer_dir else None}


def experiment_name(cfg: DictConfig) -> str:
    return f"{cfg.tracking.experiment_prefix}/{cfg.model.name}"


# Config sections that do not change what is trained (where results are logged, how they are scored).
_NOT_TRAINING = ("tracking", "evaluate", "serve", "flow")


def ray_run_name(cfg: DictConfig, data_md5: str, shards_root: str, *suffix: str) -> str:
    """The Ray Train run name ``<model>-<data version>-<config hash>[-<suffix>...]``: the same
    model, data version, shard set and training config (everything but ``tracking``,
    ``evaluate``, ``serve``, ``flow``) give the same name, so a re-run after a kill resumes from
    the last checkpoint under ``ray.storage_path/<name>`` (Ray Train V2 resumes by name)."""
    import hashlib

    from omegaconf import OmegaConf

    from seqflow.tracking.runs import short_version

    conf = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k not in _NOT_TRAINING}
    digest = hashlib.sha256(json.dumps({"cfg": conf, "shards": str(shards_root)}, sort_keys=True,
                                       default=str).encode()).hexdigest()[:12]
    return "-".join([str(cfg.model.name), short_version(data_md5), digest, *map(str, suffix)])


def train(cfg: DictConfig, shards: dict, data: dict, parent_run_id: str | None = None,
          mining_round: int | None = None) -> dict:
    """Open the MLflow run (params + standard tags), then fit on Ray Train; returns the run id,
    the best checkpoint file (by ``model.monitor``) and rank-0 metrics.

    The run is named ``<model>-<trigger word or data source>-<data version>``
    (:func:`seqflow.tracking.runs.training_run_name`); the best checkpoint is logged on it as
    ``checkpoints/best.ckpt`` with ``checkpoints/best.json`` (epoch, monitored metric). With
    ``mining_round`` (hard-negative mining) the name ends in ``-round-<n>``, the run is tagged
    ``mining.round`` and nested under ``parent_run_id``; round 2 trains from scratch on ``shards``
    (mined train split). The run is RUNNING while training, FINISHED after; a failed fit marks it
    FAILED (KILLED when stopped by SIGINT/SIGTERM) and re-raises. The Ray Train run is
    :func:`ray_run_name`: re-running after a kill resumes from its last checkpoint (``--no-cache``:
    a fresh Ray run named after the MLflow run)."""
    from seqflow.tracking.artifacts import log_best_checkpoint, log_results
    from seqflow.tracking.runs import end_run, run_metrics, standard_tags, start_training_run, training_run_name
    from seqflow.train.launcher import train_with_ray

    tags = standard_tags(data["md5"], data["git_commit"], shards["root"], int(cfg.ray.num_workers))
    if mining_round is not None:
        tags["mining.round"] = str(mining_round)
    suffix = ("round", str(mining_round)) if mining_round else ()
    run_id = start_training_run(cfg, tags, parent_run_id=parent_run_id,
                                run_name=training_run_name(cfg, data["md5"], *suffix))
    from seqflow import lock
    from seqflow.stage_cache import refresh

    ray_suffix = (*suffix, "fresh", run_id) if refresh() else suffix  # --no-cache: train anew, do not resume

    lock.record(mlflow_run_id=run_id, mlflow_tracking_uri=str(cfg.tracking.tracking_uri))  # marked if killed
    try:
        if data.get("validate"):
            log_results(run_id, **validate_record(data["validate"]))
        log_examples(run_id, shards["index"]["train"])
        result = train_with_ray(cfg, run_id, experiment_name(cfg), Path(shards["index"]["train"]),
                                Path(shards["index"]["val"]),
                                run_name=ray_run_name(cfg, data["md5"], shards["root"], *ray_suffix),
                                tokenizer_dir=shards.get("tokenizer_dir"))
    except BaseException as e:
        stopped = isinstance(e, (KeyboardInterrupt, SystemExit))  # Ctrl-C / SIGTERM (Ray raises SystemExit)
        end_run(run_id, "KILLED" if stopped else "FAILED")
        raise
    best = {k: v for k, v in result.best_metrics.items() if isinstance(v, (int, float))}
    monitor = str(cfg.model.monitor)
    artifact = log_best_checkpoint(run_id, result.checkpoint_file, {
        "epoch": best.get("epoch"), "step": best.get("step"), "monitor": monitor,
        "mode": str(cfg.model.monitor_mode), "value": best.get(monitor), "metrics": best,
        "ray_checkpoint": str(result.checkpoint_file)})
    log_results(run_id, {f"best/{monitor}": best[monitor]} if monitor in best else None,
                {"checkpoint.best_epoch": str(best.get("epoch", "unknown")), "checkpoint.artifact": artifact})
    end_run(run_id, "FINISHED")  # training is over (package, evaluate and register add to the run later)
    return {"run_id": run_id, "checkpoint": str(result.checkpoint_file), "metrics": run_metrics(run_id)}


def mining_enabled(cfg: DictConfig) -> bool:
    """Whether this model gets a hard-negative mining round (trigger word and
    ``clips.hard_negative_mining.enabled``)."""
    from seqflow.mining import mining_enabled as enabled

    return enabled(cfg)


def start_mining_run(cfg: DictConfig, shards: dict, data: dict) -> str:
    """The parent MLflow run ``<model>-<trigger word>-<data version>-hard-negative-mining``
    (standard tags, config params) that both training rounds nest under; returns its id."""
    from seqflow.tracking.runs import standard_tags, start_training_run, training_run_name

    tags = standard_tags(data["md5"], data["git_commit"], shards["root"], int(cfg.ray.num_workers))
    return start_training_run(cfg, {**tags, "mining.rounds": "2"}, keep_running=False,
                              run_name=training_run_name(cfg, data["md5"], "hard-negative-mining"))


def mine(cfg: DictConfig, shards: dict, trained: dict, packaged: dict) -> dict:
    """Score the train split with round 1's logged package, write the mined windows and round 2's
    train shards (:func:`seqflow.mining.mine_round`); val/test shards are unchanged. Returns
    ``{"shards", "metrics", "tags", "num_windows", "dir"}``."""
    from seqflow.mining import mine_round
    from seqflow.tracking.artifacts import downloaded
    from seqflow.tracking.runs import use_store

    use_store(cfg.tracking.tracking_uri)
    with downloaded(packaged["package_uri"], prefix="seqflow-mine-") as pkg:
        return mine_round(cfg, pkg, shards, trained["run_id"])


def record_mining(cfg: DictConfig, parent_run_id: str, mined: dict, packaged1: dict,
                  round2_run_id: str | None = None, packaged2: dict | None = None) -> dict:
    """Log the ``mining/*`` metrics and ``mining.*`` tags on the parent run and on round 2's run
    (the data it trained on), and each round's ``val/*`` as ``round_<n>/val/*`` on the parent (the
    before/after; round 1's own run keeps its val metrics from its package). ``round2_run_id``
    None: nothing was mined, round 1 is the one evaluated and registered. Returns the parent's
    new metrics."""
    from seqflow.tracking.artifacts import log_results
    from seqflow.tracking.runs import use_store

    use_store(cfg.tracking.tracking_uri)
    metrics = dict(mined["metrics"])
    for n, packaged in ((1, packaged1), (2, packaged2)):
        if packaged is not None:
            metrics.update({f"round_{n}/{k}": v for k, v in packaged["metrics"].items() if k.startswith("val/")})
    tags = {**mined["tags"], "mining.registered_round": "2" if round2_run_id else "1"}
    log_results(parent_run_id, metrics, tags)
    if round2_run_id:
        log_results(round2_run_id, mined["metrics"], mined["tags"])
    return metrics


PACKAGE_ARTIFACT = "package"
NUM_EXAMPLES = 4


def log_examples(run_id: str, train_index: str, n: int = NUM_EXAMPLES) -> None:
    """Log the first ``n`` training samples (augmented as the model hears them) as FLAC files
    under ``examples/``, with their json, so a listener can check what augmentation does."""
    import itertools
    import tempfile

    from seqflow.audio.io import write_audio_atomic
    from seqflow.shards.reader import iter_samples
    from seqflow.tracking.artifacts import log_results

    with tempfile.TemporaryDirectory(prefix="seqflow-examples-") as tmp:
        files, docs = [], {}
        for key, wav, meta in itertools.islice(iter_samples(train_index), n):
            path = Path(tmp) / f"{key}.flac"
            write_audio_atomic(path, wav, int(meta.get("sample_rate", 16000)))
            files.append(path)
            docs[f"examples/{key}.json"] = meta
        log_results(run_id, files={"examples": files}, documents=docs)


def package(cfg: DictConfig, shards: dict, trained: dict) -> dict:
    """Build the serving package from the best checkpoint (trigger word: threshold calibrated on
    val here) and log it as the run's ``package/`` artifact: the one thing evaluate scores and
    register ships. Returns ``{"package_uri": "runs:/<id>/package", "metrics", "tags"}``."""
    import tempfile

    from seqflow.families import get_family
    from seqflow.tracking.artifacts import log_results
    from seqflow.tracking.runs import use_store

    use_store(cfg.tracking.tracking_uri)
    with tempfile.TemporaryDirectory(prefix="seqflow-package-") as tmp:
        pkg = Path(tmp) / PACKAGE_ARTIFACT
        packaged = get_family(cfg).package(cfg, trained["checkpoint"], shards, pkg)
        log_results(trained["run_id"], packaged.metrics, packaged.tags, folders={PACKAGE_ARTIFACT: pkg},
                    documents=packaged.documents)
    return {"package_uri": f"runs:/{trained['run_id']}/{PACKAGE_ARTIFACT}", "metrics": packaged.metrics,
            "tags": packaged.tags}


def evaluate(cfg: DictConfig, shards: dict, run_id: str, package_uri: str) -> dict:
    """Score the logged package (the one register ships) on the test split and every evaluation
    set of its kind; log metrics, plots, tables and set hashes on ``run_id``."""
    from seqflow.families import get_family
    from seqflow.tracking.artifacts import downloaded, log_results
    from seqflow.tracking.runs import use_store

    use_store(cfg.tracking.tracking_uri)
    with downloaded(package_uri, prefix="seqflow-eval-") as pkg:
        ev = get_family(cfg).evaluate(cfg, pkg, shards, pkg.parent / "out")
        log_results(run_id, ev.metrics, ev.tags, files=ev.artifacts, documents=ev.documents)
    return {"metrics": ev.metrics, "tags": ev.tags}


def register(cfg: DictConfig, trained: dict, packaged: dict, evaluated: dict) -> dict:
    """Log the package as a pyfunc model, register it as ``challenger`` and run the ``champion``
    gate (``model.gate``) against the champion on the same test set. The registered model's
    description says what it is and how it is gated (optional ``model.description`` appended)."""
    import numpy as np

    from seqflow.families import get_family
    from seqflow.tracking.artifacts import downloaded
    from seqflow.tracking.redacting_client import RedactingClient
    from seqflow.tracking.registry import model_description, register_and_promote
    from seqflow.tracking.runs import log_model_to_run, run_subject, use_store

    gate = cfg.model.gate
    use_store(cfg.tracking.tracking_uri)
    example = np.zeros(int(cfg.audio.sample_rate), dtype=np.float32)
    fam = get_family(cfg)
    with downloaded(packaged["package_uri"], prefix="seqflow-register-") as pkg:
        info = log_model_to_run(trained["run_id"], fam.log_model, pkg, example)
    description = model_description(fam.kind, str(cfg.model.name), str(cfg.model.family), run_subject(cfg),
                                    str(gate.metric), bool(gate.lower_is_better), cfg.tracking.challenger_alias,
                                    cfg.tracking.champion_alias, cfg.model.get("description"))
    decision = register_and_promote(info.model_uri, cfg.model.registered_name, trained["run_id"],
                                    metric_key=str(gate.metric), lower_is_better=bool(gate.lower_is_better),
                                    allow_test_set_change=bool(gate.allow_test_set_change),
                                    challenger_alias=cfg.tracking.challenger_alias,
                                    champion_alias=cfg.tracking.champion_alias,
                                    test_set_id=evaluated["tags"]["eval.test_set"], description=description,
                                    client=RedactingClient())   # descriptions and tags redacted
    aliases = [cfg.tracking.challenger_alias] + ([cfg.tracking.champion_alias] if decision.promoted else [])
    return {"name": cfg.model.registered_name, "version": decision.version, "aliases": aliases,
            "reason": decision.reason, "decision": {k: v for k, v in asdict(decision).items()}}


def format_summary(summary: dict) -> str:
    """The lines ``make pipeline`` ends with."""
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else json.dumps(v) if isinstance(v, (dict, list)) else str(v)
    width = max(len(k) for k in summary)
    lines = ["", "seqflow pipeline finished", "-" * 60]
    lines += [f"{k:<{width}}  {fmt(v)}" for k, v in summary.items()]
    return "\n".join(lines)
