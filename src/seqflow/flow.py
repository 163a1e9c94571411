"""The Prefect flow ``pipeline``: prepare → validate → version → shard → train → evaluate → register.

One task per stage; the version step retries (transient remote errors). Runs on Prefect's
ephemeral API unless ``PREFECT_API_URL`` points at a server. Entry points: ``seqflow pipeline``,
``python flows/pipeline.py``, ``make pipeline``; scheduled: ``seqflow deploy`` (:mod:`seqflow.deploy`).
Each run ends by publishing its summary as a markdown artifact (:mod:`seqflow.run_summary`).

``seqflow pipeline`` holds the workdir lock (:mod:`seqflow.lock`; ``--wait`` queues), reuses
finished stages from shard on (:mod:`seqflow.stage_cache`; ``--no-cache`` re-runs them) and leaves
true state when it fails, is stopped or was killed (:mod:`seqflow.fault_state`).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

# Prefect's ephemeral API gets 20 s to start by default, which a busy 2-core box misses
# ("Timed out while attempting to connect to ephemeral Prefect API server"). Set before Prefect is
# imported (its settings are read then); a value from the environment wins.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from omegaconf import DictConfig, OmegaConf  # noqa: E402
from prefect import flow, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from seqflow import lock as workdir_lock  # noqa: E402
from seqflow import stages  # noqa: E402
from seqflow.stage_cache import CACHED, run_stage  # noqa: E402
from seqflow.stage_timeout import check_timeouts, limited, not_timed_out  # noqa: E402
from seqflow.train.abort import abort_ray_train  # noqa: E402

log = logging.getLogger("seqflow.pipeline")

# Every stage (Prefect task name); each has a limit, flow.timeouts.<name with _> (seqflow.stage_timeout).
STAGES = ("prepare", "validate", "version", "shard", "train", "start-mining-run", "mine", "record-mining",
          "check-eval-sets", "package", "evaluate", "register", "summary-artifact")


def _cfg(cfg: dict) -> DictConfig:
    return OmegaConf.create(cfg)


@task(name="prepare", cache_policy=NO_CACHE)
@limited("prepare")
def prepare(cfg: dict) -> str:
    return str(stages.prepare(_cfg(cfg)))


@task(name="validate", cache_policy=NO_CACHE)
@limited("validate")
def validate(cfg: dict) -> dict:
    return stages.validate(_cfg(cfg))


@task(name="version", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2, retry_condition_fn=not_timed_out)
@limited("version")
def version(cfg: dict) -> dict:
    return stages.version(_cfg(cfg))


@task(name="shard", **CACHED)
@limited("shard")
def shard(cfg: dict, data_md5: str) -> dict:
    return stages.shard(_cfg(cfg), data_md5)


@task(name="train", **CACHED)
@limited("train", abort=abort_ray_train)  # at its limit the Ray Train controller and workers are killed
def train(cfg: dict, shards: dict, data: dict, parent_run_id: str | None = None,
          mining_round: int | None = None) -> dict:
    return stages.train(_cfg(cfg), shards, data, parent_run_id, mining_round)


@task(name="start-mining-run", **CACHED)
@limited("start-mining-run")
def start_mining_run(cfg: dict, shards: dict, data: dict) -> str:
    return stages.start_mining_run(_cfg(cfg), shards, data)


@task(name="mine", **CACHED)
@limited("mine")
def mine(cfg: dict, shards: dict, trained: dict, packaged: dict) -> dict:
    return stages.mine(_cfg(cfg), shards, trained, packaged)


@task(name="record-mining", **CACHED)
@limited("record-mining")
def record_mining(cfg: dict, parent_run_id: str, mined: dict, packaged1: dict, round2_run_id: str | None = None,
                  packaged2: dict | None = None) -> dict:
    return stages.record_mining(_cfg(cfg), parent_run_id, mined, packaged1, round2_run_id, packaged2)


@task(name="check-eval-sets", cache_policy=NO_CACHE)
@limited("check-eval-sets")
def check_eval_sets(cfg: dict) -> dict:
    return stages.check_eval_sets(_cfg(cfg))


@task(name="package", **CACHED)
@limited("package")
def package(cfg: dict, shards: dict, trained: dict) -> dict:
    return stages.package(_cfg(cfg), shards, trained)


@task(name="evaluate", **CACHED)
@limited("evaluate")
def evaluate(cfg: dict, shards: dict, run_id: str, package_uri: str, eval_sets: dict | None = None) -> dict:
    """``eval_sets`` (:func:`eval_sets_id`) only keys the cache: a rebuilt set re-runs evaluate."""
    return stages.evaluate(_cfg(cfg), shards, run_id, package_uri)


def eval_sets_id(cfg: dict) -> dict[str, str]:
    """``{set name: sha256 of its manifest}`` for each configured evaluation set that exists."""
    import hashlib
    from pathlib import Path

    out = {}
    for s in cfg.get("evaluate", {}).get("sets") or []:
        manifest = Path(str(s["manifest"]))
        if manifest.is_file():
            out[str(s["name"])] = hashlib.sha256(manifest.read_bytes()).hexdigest()
    return out


@task(name="register", **CACHED, retries=1, retry_delay_seconds=2, retry_condition_fn=not_timed_out)
@limited("register")
def register(cfg: dict, trained: dict, packaged: dict, evaluated: dict) -> dict:
    return stages.register(_cfg(cfg), trained, packaged, evaluated)


@task(name="summary-artifact", cache_policy=NO_CACHE)
@limited("summary-artifact")
def summary_artifact(summaries: list[dict], cfg: dict) -> None:
    """Publish the summaries as the flow run's ``seqflow-summary`` markdown artifact, linked to
    the MLflow runs in the store the stages logged to (``mlflow.get_tracking_uri()``, set by
    them). A failure here is a warning: the model is already registered. ``cfg`` (the first
    model's config) gives its limit, ``flow.timeouts.summary_artifact``."""
    import mlflow

    from seqflow.run_summary import publish_summary

    try:
        publish_summary(summaries, mlflow.get_tracking_uri())
    except Exception as exc:  # noqa: BLE001 - see docstring
        log.warning("summary artifact not published: %s: %s", type(exc).__name__, str(exc).splitlines()[0])


def train_rounds(cfg: dict, shards: dict, data: dict) -> tuple[dict, dict, dict]:
    """train → package, once; or with ``clips.hard_negative_mining.enabled`` (trigger word): a
    parent MLflow run, round 1 (train → package), mine the train split with round 1's package,
    round 2 (train from scratch on the re-sharded train split → package, val/test unchanged), both
    rounds nested under the parent. Returns ``(trained, packaged, summary extras)`` of the round
    that goes on to evaluate and register (round 2; round 1 when nothing was mined)."""
    uri = cfg["tracking"]["tracking_uri"]
    if not stages.mining_enabled(_cfg(cfg)):
        trained = run_stage(train, uri, cfg, shards, data)
        return trained, run_stage(package, uri, cfg, shards, trained), {}
    parent = run_stage(start_mining_run, uri, cfg, shards, data)
    workdir_lock.record(mlflow_run_id=parent)
    trained1 = run_stage(train, uri, cfg, shards, data, parent, 1)
    packaged1 = run_stage(package, uri, cfg, shards, trained1)
    mined = run_stage(mine, uri, cfg, shards, trained1, packaged1)
    if not mined["num_windows"]:
        log.warning("mining: no false accepts on the train split; round 1 is evaluated and registered")
        metrics = run_stage(record_mining, uri, cfg, parent, mined, packaged1)
        trained, packaged = trained1, packaged1
    else:
        trained = run_stage(train, uri, cfg, mined["shards"], data, parent, 2)
        packaged = run_stage(package, uri, cfg, mined["shards"], trained)
        metrics = run_stage(record_mining, uri, cfg, parent, mined, packaged1, trained["run_id"], packaged)
    extras = {"mlflow_parent_run_id": parent, "round_1_run_id": trained1["run_id"],
              **{k: v for k, v in metrics.items() if k in ("mining/num_windows", "mining/fa_per_hour",
                                                             "mining/hours_scored", "round_1/val/frr")}}
    return trained, packaged, extras


@flow(name="pipeline", log_prints=True)
def pipeline(cfgs: list[dict]) -> list[dict[str, Any]]:
    """Run every stage; ``cfgs`` holds one composed config (plain dict) per model to train.

    prepare, validate and version run once (every model shares the corpus and its data version);
    shard → train → package → evaluate → register run per model (with hard-negative mining two
    train → package rounds, see :func:`train_rounds`). Returns one summary per model, also
    published as the run's ``seqflow-summary`` markdown artifact.

    The run holds the workdir lock: ``seqflow pipeline`` took it already; a scheduled or served
    run takes it here, waiting at most ``flow.lock_wait_s`` s (:func:`seqflow.deploy.run_lock`).
    """
    from seqflow.deploy import run_lock

    with run_lock(cfgs):
        return _run_stages(cfgs)


def _run_stages(cfgs: list[dict]) -> list[dict[str, Any]]:
    """The stages of :func:`pipeline`, run under the workdir lock."""
    t0 = time.perf_counter()
    base = cfgs[0]
    from prefect.runtime import flow_run

    workdir_lock.record(prefect_flow_run_id=flow_run.id, mlflow_tracking_uri=base["tracking"]["tracking_uri"])
    prepare(base)
    report = validate(base)
    data = {**version(base), "validate": report}  # the counts go onto each training run
    summaries = []
    for cfg in cfgs:
        check_eval_sets(cfg)
        uri = cfg["tracking"]["tracking_uri"]
        shards = run_stage(shard, uri, cfg, data["md5"])
        trained, packaged, extras = train_rounds(cfg, shards, data)
        evaluated = run_stage(evaluate, uri, cfg, shards, trained["run_id"], packaged["package_uri"],
                              eval_sets_id(cfg))
        registered = run_stage(register, uri, cfg, trained, packaged, evaluated)
        workdir_lock.record(forget_mlflow_runs=True)  # this model's runs are complete
        metrics = {**packaged["metrics"], **evaluated["metrics"]}
        summaries.append({
            "model": cfg["model"]["name"],
            "data.dvc_md5": data["md5"],
            "validate": report,
            "shards": shards["root"],
            "throughput/samples_per_s": trained["metrics"].get("throughput/samples_per_s"),
            **{k: v for k, v in metrics.items() if k in ("val/threshold", "val/frr", "val/fa_per_hour")
               or k.startswith(("test/", "eval/")) and not k.endswith(("hours", "/threshold"))},
            "mlflow_run_id": trained["run_id"],
            **extras,
            "registered_model": registered["name"],
            "version": registered["version"],
            "aliases": registered["aliases"],
            "promotion": registered["reason"],
            "wall_s": round(time.perf_counter() - t0, 1),
        })
        print(stages.format_summary(summaries[-1]))
    summary_artifact(summaries, base)
    return summaries


def compose_configs(overrides: list[str] | None = None) -> list[dict]:
    """One checked, resolved config (plain dict) per requested model: ``model=[a,b]`` trains
    several models in one flow run; every other override applies to all of them.

    Raises:
        ConfigError / Hydra errors: before any work starts.
    """
    from seqflow.config import load_config

    from seqflow.config import split_model_list

    models, rest = split_model_list(list(overrides or []))
    cfgs = [load_config(rest + [f"model={m}"]) for m in models] if models else [load_config(rest)]
    for cfg in cfgs:
        stages.check_config(cfg)
    plain = [OmegaConf.to_container(cfg, resolve=True) for cfg in cfgs]
    for cfg in plain:
        check_timeouts(cfg, STAGES)
    return plain


def run_pipeline(overrides: list[str] | None = None, wait: bool = False,
                 no_cache: bool = False) -> list[dict[str, Any]]:
    """Compose the configs (see :func:`compose_configs`), take the workdir lock and run the flow
    (used by the CLI).

    ``wait``: queue behind a live holder of the workdir lock instead of failing. ``no_cache``: run
    every stage again (:mod:`seqflow.stage_cache`). A lock left by a dead holder is taken over and
    its MLflow runs marked KILLED, its Prefect flow run CRASHED, and the temporary Prefect server it
    left running is stopped (its pid is in the lock record). When the flow fails, or SIGINT /
    SIGTERM stops it, this run's unfinished MLflow runs are marked FAILED / KILLED and its Prefect
    flow run FAILED / CANCELLED (:mod:`seqflow.fault_state`), then the error propagates (for a
    signal as :class:`seqflow.fault_state.Stopped`, after the lock is released). A stage
    past its limit (``flow.timeouts.<stage>``) fails the run the same way; one that does not return
    after its interrupt ends the process (:func:`seqflow.stage_timeout.hard_exit_on_hang`).

    Raises:
        seqflow.lock.WorkdirLockedError: another live process holds the workdir (``wait`` False).
        ConfigError / Hydra errors: before any work; ``fault_state.Stopped`` (a KeyboardInterrupt)
            for SIGINT / SIGTERM.
        seqflow.stage_timeout.StageTimeoutError: a stage ran past its limit.
    """
    from seqflow import fault_state, stage_cache, stage_timeout

    cfgs = compose_configs(overrides)
    lock = workdir_lock.WorkdirLock(cfgs[0]["workdir"])
    with fault_state.stop_on_sigterm():
        stale = lock.acquire(wait=wait)
        try:
            if stale:
                fault_state.recover_stale(stale)
            # started before the flow (which would start it) so that its pid is in the lock record,
            # from the moment it is spawned (a kill during its start-up leaves nothing running)
            lock.record(prefect_server=fault_state.start_prefect_server(
                on_spawn=lambda server: lock.record(prefect_server=server)))
            stage_cache.set_refresh(no_cache)
            try:
                with stage_timeout.hard_exit_on_hang(lambda err: (fault_state.mark_stopped(lock.info, err),
                                                                  lock.release())):
                    return pipeline(cfgs)
            except BaseException as e:
                stopped = fault_state.mark_stopped(lock.info, e)
                if stopped is None:
                    raise
                raise stopped from e  # a signal, whatever Ray or Prefect made of it: the CLI exits 128 + signum
        finally:
            lock.release()
