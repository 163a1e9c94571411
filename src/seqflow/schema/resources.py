"""Pre-flight checks against the machine: the CPUs/GPUs a local Ray run asks for, and the disk
space the corpus and shards will take. Both run before any work and fail with one line.

A joined Ray cluster (``ray.address`` / ``RAY_ADDRESS``) is not checked here: it may autoscale,
so :func:`seqflow.train.launcher.train_with_ray` waits at most ``ray.worker_group_timeout_s``
for the worker group and then fails naming what was missing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from omegaconf import DictConfig

from seqflow.errors import ConfigError

BYTES_PER_SECOND_PER_HZ = 2   # 16-bit PCM: an upper bound for the FLAC/WAV files written
WORD_SECONDS = 1.0            # a rendered word or short phrase [s]
SENTENCE_SECONDS = 4.0        # a rendered sentence [s]
MARGIN = 1.1                  # estimates are raised by 10 %


def machine_cpus() -> int:
    """CPUs this process may use, as Ray counts them for a local instance: the CPU affinity set,
    capped by a cgroup v2 quota (``/sys/fs/cgroup/cpu.max``) when one is set; at least 1."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, int(int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return max(1, n)


def machine_gpus() -> int:
    """NVIDIA GPUs visible to this process: ``CUDA_VISIBLE_DEVICES`` when set, else the entries
    of ``/proc/driver/nvidia/gpus`` (0 without the NVIDIA driver)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    gpus = Path("/proc/driver/nvidia/gpus")
    return len(list(gpus.iterdir())) if gpus.is_dir() else 0


def check_local_ray_resources(cfg: DictConfig) -> None:
    """A local Ray run must fit the machine: ``ray.num_workers × ray.cpus_per_worker`` CPUs
    within ``ray.num_cpus`` (or this machine's CPUs when null), and with ``ray.use_gpu`` one GPU
    per worker. Ray Train would otherwise wait forever for the missing resources.

    Raises:
        ConfigError: naming the keys, what the run needs and what the machine has.
    """
    from seqflow.train.launcher import cluster_address

    if cluster_address(cfg) is not None:
        return
    world, per = int(cfg.ray.num_workers), float(cfg.ray.cpus_per_worker)
    num_cpus = cfg.ray.get("num_cpus")
    have = int(num_cpus) if num_cpus is not None else machine_cpus()
    where = f"ray.num_cpus={have}" if num_cpus is not None else f"this machine has {have} CPU(s)"
    if world * per > have:
        raise ConfigError(f"ray.num_workers={world} x ray.cpus_per_worker={per:g}: needs {world * per:g} CPUs, "
                          f"but local Ray has {have} ({where}); lower ray.num_workers or ray.cpus_per_worker, "
                          "or join a larger cluster (ray=cluster)")
    if cfg.ray.use_gpu:
        gpus = machine_gpus()
        if world > gpus:
            raise ConfigError(f"ray.use_gpu=true with ray.num_workers={world}: needs {world} GPU(s), this machine "
                              f"has {gpus}; lower ray.num_workers, set ray.use_gpu=false, or join a GPU cluster")


def _tree_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (a file: its size; missing: 0)."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def _source_paths(path) -> list[Path]:
    if path is None:
        return []
    if isinstance(path, str):
        return [Path(path)]
    if hasattr(path, "values"):
        return [Path(str(p)) for p in path.values() if p]
    return [Path(str(p)) for p in path]


def estimate_bytes(cfg: DictConfig) -> dict[str, int]:
    """Upper estimates [bytes] of what prepare and shard write: ``{"corpus": ..., "shards": ...}``.

    Synthetic corpus: every render (espeak and Piper words and sentences) and background at 16-bit
    PCM; user sources: the size of ``data.path`` (copied into ``data.root``), less what
    ``data.root`` already holds (rebuilt in place). Shards: trigger word, the clips (train + val +
    test × ``clips.duration``) at 16-bit PCM; ASR, the corpus again. Both times 1.1.
    """
    d, sr = cfg.data, int(cfg.audio.sample_rate)
    per_s = sr * BYTES_PER_SECOND_PER_HZ
    if str(d.source) == "synthetic":
        voices = int(d.num_voices)
        seconds = voices * (int(d.renders_per_voice) + int(d.negatives_per_voice)) * WORD_SECONDS
        seconds += int(d.num_sentences) * SENTENCE_SECONDS
        if "piper" in list(d.get("tts_engines") or []):
            p = d.piper
            seconds += len(p.voices) * ((int(p.positives) + int(p.negatives)) * WORD_SECONDS
                                        + int(p.sentences) * SENTENCE_SECONDS)
        kinds = len(d.background_kinds or [])
        seconds += kinds * sum(int(v) for v in d.backgrounds_per_kind.values()) * float(d.background_seconds)
        corpus = int(seconds * per_s)
    else:
        corpus = sum(_tree_bytes(p) for p in _source_paths(d.get("path")))
    corpus = max(0, corpus - _tree_bytes(Path(str(d.root))))
    from seqflow.families import get_family

    if get_family(cfg).kind == "trigger_word":
        c = cfg.clips
        shards = int((int(c.train_clips) + int(c.val_clips) + int(c.test_clips)) * float(c.duration) * per_s)
    else:
        shards = corpus
    return {"corpus": int(corpus * MARGIN), "shards": int(shards * MARGIN)}


def _existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists():
        p = p.parent
    return p


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} PB"  # pragma: no cover


def check_disk_space(cfg: DictConfig) -> None:
    """The filesystems of ``data.root`` and ``shards.root`` have room for :func:`estimate_bytes`
    (summed when both are on one filesystem).

    Raises:
        ConfigError: naming the path, the bytes needed and the bytes free.
    """
    est = estimate_bytes(cfg)
    need: dict[int, list] = {}
    for what, key, path in (("corpus", "data.root", Path(str(cfg.data.root))),
                            ("shards", "shards.root", Path(str(cfg.shards.root)))):
        where = _existing(path)
        entry = need.setdefault(where.stat().st_dev, [where, 0, []])
        entry[1] += est[what]
        entry[2].append(f"{what} ~{_size(est[what])} under {key}={path}")
    for where, needed, parts in need.values():
        free = shutil.disk_usage(where).free
        if needed > free:
            raise ConfigError(f"not enough disk space at {where}: needs {needed} bytes ({_size(needed)}: "
                              f"{'; '.join(parts)}), {free} bytes ({_size(free)}) free; free space or point "
                              "data.root / shards.root at a larger disk")
