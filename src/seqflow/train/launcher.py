"""Driver side of training: start (or join) Ray, run ``TorchTrainer``, return the checkpoint.

Embedded default: a local Ray started here with 2 CPU workers (gloo). At scale:
``ray.address=auto`` (or ``RAY_ADDRESS``) joins an existing cluster, ``ray.placement_strategy``
spreads or packs the ranks over its nodes, ``ray.storage_path`` (a shared mount or ``s3://``)
holds checkpoints every node can reach, ``ray.use_gpu=true`` uses NCCL. See docs/ray-cluster.md.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from omegaconf import DictConfig, OmegaConf

from seqflow.errors import ConfigError, SeqflowError

log = logging.getLogger("seqflow.train")

PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
TAG_RANK_NODES = "ray.rank_nodes"   # JSON list: the Ray node id each rank ran on, index = rank
TAG_NUM_NODES = "ray.num_nodes"     # distinct Ray nodes the ranks ran on
TAG_PLACEMENT = "ray.placement_strategy"
MAX_TAG_CHARS = 7900                # MLflow keeps tag values up to 8000 characters


class RayClusterError(SeqflowError, ConnectionError):
    """The Ray cluster named by ``ray.address`` / ``RAY_ADDRESS`` could not be joined."""


@dataclass
class TrainResult:
    """What a training run produced: the best Lightning checkpoint file by ``model.monitor``
    (``best_metrics``: what was reported with it), rank-0's last reported metrics, and the Ray
    node id each rank ran on (``rank_nodes[rank]``; empty when it could not be read back)."""

    checkpoint_file: Path
    metrics: dict
    storage_path: str
    best_metrics: dict
    rank_nodes: list = field(default_factory=list)


def check_ray_config(cfg: DictConfig) -> None:
    """Fail before any work on Ray settings that cannot work.

    Raises:
        ConfigError: ``ray.placement_strategy`` not one of PACK, SPREAD, STRICT_PACK,
            STRICT_SPREAD; ``ray.num_workers`` < 1; ``ray.cpus_per_worker`` <= 0; empty
            ``ray.storage_path``.
    """
    strategy = str(cfg.ray.get("placement_strategy") or "PACK")
    if strategy not in PLACEMENT_STRATEGIES:
        raise ConfigError(f"ray.placement_strategy={strategy!r}: must be one of {', '.join(PLACEMENT_STRATEGIES)}")
    if int(cfg.ray.num_workers) < 1:
        raise ConfigError(f"ray.num_workers={cfg.ray.num_workers}: must be >= 1")
    if float(cfg.ray.cpus_per_worker) <= 0:
        raise ConfigError(f"ray.cpus_per_worker={cfg.ray.cpus_per_worker}: must be > 0")
    if not str(cfg.ray.storage_path or "").strip():
        raise ConfigError("ray.storage_path is empty: set a folder (or s3:// URI) every Ray node can reach")


def cluster_address(cfg: DictConfig) -> str | None:
    """The cluster to join: ``cfg.ray.address`` if set, else ``"auto"`` when ``RAY_ADDRESS`` is
    set (Ray reads it), else None (start a local Ray)."""
    if cfg.ray.address:
        return str(cfg.ray.address)
    return "auto" if os.environ.get("RAY_ADDRESS") else None


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast when nothing listens at a ``host:port`` cluster address (Ray itself retries for
    minutes); other forms (``auto``, ``ray://...``) are left to Ray.

    Raises:
        RayClusterError: the TCP connection to ``host:port`` was refused or timed out.
    """
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or "://" in address:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise RayClusterError(f"cannot join Ray cluster at {address}: nothing answers there ({e.strerror or e}); "
                              "start it with `ray start --head --port=...` or fix ray.address / RAY_ADDRESS") from e


def init_ray(cfg: DictConfig) -> bool:
    """Join the cluster of :func:`cluster_address`, else start a fresh local Ray instance
    (``ray.num_cpus`` CPUs). Returns True when this call connected (the caller then owns the
    connection and calls ``ray.shutdown``), False when Ray was already initialized.

    On a joined cluster only connection arguments are passed (``ray.num_cpus`` is ignored: the
    nodes' ``ray start --num-cpus`` decide); ``ray.shutdown`` then disconnects this driver and
    leaves the cluster running.

    Raises:
        RayClusterError: the cluster could not be joined (not running, wrong address, or token
            authentication: Ray's default, see docs/ray-cluster.md).
    """
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    address = cluster_address(cfg)
    # Ray's own loggers at ERROR in every Ray process (the Train V2 placement-group cleaner warns
    # every second when the dashboard's state API is off); seqflow's loggers stay at INFO.
    kwargs = dict(include_dashboard=False, log_to_driver=True, configure_logging=True,
                  logging_level=logging.WARNING, logging_config=ray.LoggingConfig(log_level="ERROR"))
    if address is None:
        # "local": always a fresh instance, never a stale cluster left on this machine
        init_local_loopback(num_cpus=cfg.ray.num_cpus, **kwargs)
        return True
    shown = os.environ.get("RAY_ADDRESS", "auto") if address == "auto" else address
    if cfg.ray.get("num_cpus") is not None:
        log.info("ray.num_cpus=%s ignored: joining a cluster, whose nodes set their own CPUs", cfg.ray.num_cpus)
    log.info("joining Ray cluster at %s", shown)
    check_reachable(shown)
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError) as e:
        raise RayClusterError(
            f"cannot join Ray cluster at {shown}: {str(e).splitlines()[0] if str(e) else type(e).__name__} "
            "(is `ray start --head` running there? with an explicit address and Ray's default token "
            "auth set RAY_AUTH_MODE=token and the cluster's token: ~/.ray/auth_token, RAY_AUTH_TOKEN "
            "or RAY_AUTH_TOKEN_PATH)") from e
    log_cluster(cfg)
    return True


LOOPBACK = "127.0.0.1"


def init_local_loopback(**kwargs) -> None:
    """``ray.init(address="local", **kwargs)`` with every Ray listener (GCS, raylet node and
    object managers, workers, agents) bound to 127.0.0.1 instead of all interfaces.

    Ray binds its gRPC servers to loopback only when the node IP it is given is literally
    ``127.0.0.1``, but ``ray.init`` rewrites that to the routable address unless
    ``ray_constants.ENABLE_RAY_CLUSTER`` is off (its Windows/macOS single-node mode). That flag is
    switched off for this call only: left off (or set through ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER``,
    which child ``ray start`` processes inherit) it would refuse ``ray start --address`` worker nodes.
    See docs/security.md.
    """
    import ray
    from ray._private import ray_constants

    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(address="local", _node_ip_address=LOOPBACK, **kwargs)
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before


def log_cluster(cfg: DictConfig) -> None:
    """One line per alive node of the joined cluster, and a warning when its CPUs/GPUs cannot
    hold ``ray.num_workers`` workers (Ray Train then waits for an autoscaler)."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    totals = ray.cluster_resources()
    log.info("Ray cluster: %d node(s), %g CPU, %g GPU", len(nodes), totals.get("CPU", 0), totals.get("GPU", 0))
    for n in nodes:
        r = n.get("Resources", {})
        log.info("  node %s  %s  CPU %g  GPU %g", n["NodeID"], n.get("NodeManagerAddress"), r.get("CPU", 0),
                 r.get("GPU", 0))
    world = int(cfg.ray.num_workers)
    need_cpu, need_gpu = world * float(cfg.ray.cpus_per_worker), world * (1.0 if cfg.ray.use_gpu else 0.0)
    if totals.get("CPU", 0) < need_cpu or totals.get("GPU", 0) < need_gpu:
        log.warning("the cluster has %g CPU / %g GPU; %d workers need %g CPU / %g GPU: training waits for more nodes "
                    "(at most ray.worker_group_timeout_s=%s s)", totals.get("CPU", 0), totals.get("GPU", 0), world,
                    need_cpu, need_gpu, cfg.ray.get("worker_group_timeout_s"))


@contextlib.contextmanager
def ray_session(cfg: DictConfig) -> Iterator[None]:
    """:func:`init_ray` for the block; ``ray.shutdown`` at its end only if this call connected
    (a Ray the caller initialized stays up; a joined cluster keeps running either way)."""
    import ray

    started = init_ray(cfg)
    try:
        yield
    finally:
        if started and ray.is_initialized():
            ray.shutdown()


def select_best(checkpoints: list, monitor: str, mode: str):
    """``(checkpoint, metrics)`` with the best ``metrics[monitor]`` (lowest for ``mode="min"``,
    highest for ``"max"``; the later one on ties), or None when none reported ``monitor``."""
    scored = [(i, c, m) for i, (c, m) in enumerate(checkpoints) if monitor in m]
    if not scored:
        return None
    sign = 1.0 if mode == "min" else -1.0
    _, ckpt, metrics = min(scored, key=lambda t: (sign * float(t[2][monitor]), -t[0]))
    return ckpt, dict(metrics)


def local_checkpoint_dir(checkpoint, dest: Path) -> Path:
    """A local folder holding ``checkpoint``'s files: its own path on a local filesystem, else
    (``s3://`` and other remote storage) a copy downloaded to ``dest`` (reused if complete)."""
    import pyarrow.fs

    if isinstance(checkpoint.filesystem, pyarrow.fs.LocalFileSystem):
        return Path(checkpoint.path)
    done = dest / ".complete"
    if not done.exists():
        dest.mkdir(parents=True, exist_ok=True)
        checkpoint.to_directory(str(dest))
        done.touch()
    return dest


def rank_placement_tags(placement: list[dict], strategy: str) -> dict[str, str]:
    """MLflow tags for where the ranks ran: ``ray.rank_nodes`` (JSON list of node ids, index =
    rank; 16-character prefixes past MLflow's tag limit), ``ray.num_nodes``, ``ray.placement_strategy``."""
    ids = [p["node_id"] for p in sorted(placement, key=lambda p: p["rank"])]
    text = json.dumps(ids)
    if len(text) > MAX_TAG_CHARS:
        text = json.dumps([i[:16] for i in ids])
    return {TAG_RANK_NODES: text, TAG_NUM_NODES: str(len(set(ids))), TAG_PLACEMENT: strategy}


def train_loop_recording_placement(config: dict) -> None:
    """Ray Train entry point: record which Ray node this rank runs on, then run
    :func:`seqflow.train.worker.train_loop_per_worker`. Every rank all-gathers its node (a
    collective outside any rank-0 branch, see ray#56997); rank 0 alone tags the MLflow run
    (:func:`rank_placement_tags`) and logs one line per rank."""
    import mlflow
    import ray
    import ray.train
    import torch.distributed as dist

    from seqflow.train.worker import train_loop_per_worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("seqflow").setLevel(logging.INFO)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    here = {"rank": rank, "node_id": ray.get_runtime_context().get_node_id(),
            "node_ip": ray.util.get_node_ip_address(), "host": socket.gethostname(), "pid": os.getpid()}
    placement = [here]
    if world > 1 and dist.is_available() and dist.is_initialized():
        placement = [None] * world
        dist.all_gather_object(placement, here)
    if rank == 0:
        for p in placement:
            log.info("rank %d/%d on Ray node %s (%s, %s, pid %d)", p["rank"], world, p["node_id"], p["node_ip"],
                     p["host"], p["pid"])
        cfg = config["cfg"]
        tags = rank_placement_tags(placement, str(cfg["ray"].get("placement_strategy") or "PACK"))
        client = mlflow.MlflowClient(tracking_uri=cfg["tracking"]["tracking_uri"])
        for key, value in tags.items():
            client.set_tag(config["run_id"], key, value)
    train_loop_per_worker(config)


def read_rank_nodes(cfg: DictConfig, run_id: str) -> list:
    """The ``ray.rank_nodes`` tag of ``run_id`` as a list (index = rank); [] when absent."""
    import mlflow

    tags = mlflow.MlflowClient(tracking_uri=str(cfg.tracking.tracking_uri)).get_run(run_id).data.tags
    return json.loads(tags.get(TAG_RANK_NODES, "[]"))


def train_with_ray(cfg: DictConfig, run_id: str, experiment_name: str, train_index: Path,
                   val_index: Path, run_name: str, tokenizer_dir: str | None = None) -> TrainResult:
    """Fit the configured model with Lightning DDP on ``cfg.ray.num_workers`` Ray Train workers,
    placed by ``cfg.ray.placement_strategy`` (PACK, SPREAD, STRICT_PACK, STRICT_SPREAD).

    Checkpoints go to ``cfg.ray.storage_path/<run_name>`` (a local folder or a pyarrow URI such as
    ``s3://bucket/prefix``; a remote best checkpoint is downloaded under
    ``<workdir>/ray_results/<run_name>/``); re-running with the same ``run_name`` resumes. A
    failed worker group restarts up to ``cfg.ray.max_failures`` times from the last checkpoint.
    The MLflow run is tagged with each rank's Ray node (``ray.rank_nodes``, ``ray.num_nodes``).

    Raises:
        ConfigError: bad ``ray.*`` values (:func:`check_ray_config`).
        RayClusterError: the configured cluster could not be joined.
        ray.train.TrainingFailedError: training failed more than ``max_failures`` times.
        seqflow.train.group_wait.WorkerGroupTimeoutError: the worker group's resources did not
            appear within ``ray.worker_group_timeout_s``.
    """
    warnings.filterwarnings("ignore", message=".*litlogger.*")
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from seqflow.shards.reader import check_shards_for_ranks
    from seqflow.train.group_wait import bounded_group_wait, failure_limits

    check_ray_config(cfg)
    world = int(cfg.ray.num_workers)
    monitor, mode = str(cfg.model.monitor), str(cfg.model.monitor_mode)
    strategy = str(cfg.ray.get("placement_strategy") or "PACK")
    check_shards_for_ranks(str(train_index), world, int(cfg.trainer.num_workers))
    check_shards_for_ranks(str(val_index), world, int(cfg.trainer.num_workers))
    resources = {"CPU": float(cfg.ray.cpus_per_worker)}
    if cfg.ray.use_gpu:
        resources["GPU"] = 1.0
    with ray_session(cfg), bounded_group_wait(cfg):  # at most ray.worker_group_timeout_s for the worker group
        trainer = TorchTrainer(
            train_loop_recording_placement,
            train_loop_config={"cfg": OmegaConf.to_container(cfg, resolve=True), "run_id": run_id,
                               "experiment_name": experiment_name,
                               "train_index": str(train_index), "val_index": str(val_index),
                               "tokenizer_dir": tokenizer_dir},
            scaling_config=ScalingConfig(num_workers=world, use_gpu=bool(cfg.ray.use_gpu),
                                         resources_per_worker=resources, placement_strategy=strategy),
            run_config=RunConfig(name=run_name, storage_path=str(cfg.ray.storage_path),
                                 failure_config=FailureConfig(max_failures=int(cfg.ray.max_failures),
                                                              **failure_limits(cfg)),
                                 checkpoint_config=CheckpointConfig(
                                     num_to_keep=2, checkpoint_score_attribute=monitor,
                                     checkpoint_score_order=mode)),
        )
        log.info("training %s on %d Ray worker(s), placement %s, use_gpu=%s, storage %s", cfg.model.name, world,
                 strategy, cfg.ray.use_gpu, cfg.ray.storage_path)
        result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"training run {run_name} reported no checkpoint (see {cfg.ray.storage_path})")
    best = select_best(result.best_checkpoints or [], monitor, mode) or (result.checkpoint, dict(result.metrics or {}))
    best, best_metrics = best
    log.info("best checkpoint by %s (%s): epoch %s, %s = %s", monitor, mode, best_metrics.get("epoch"), monitor,
             best_metrics.get(monitor))
    ckpt_dir = local_checkpoint_dir(best, Path(cfg.workdir) / "ray_results" / run_name / Path(best.path).name)
    rank_nodes = read_rank_nodes(cfg, run_id)
    log.info("%d rank(s) ran on %d Ray node(s)", len(rank_nodes), len(set(rank_nodes)))
    return TrainResult(checkpoint_file=ckpt_dir / "checkpoint.ckpt", metrics=dict(result.metrics or {}),
                       storage_path=str(cfg.ray.storage_path), best_metrics=best_metrics, rank_nodes=rank_nodes)
