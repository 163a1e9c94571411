"""Room impulse responses (RIRs) for reverberation: simulated shoebox rooms, banked and cached.

A RIR is a hybrid of the two usual models: the image-source method (``pyroomacoustics``) up to a
small reflection order gives the direct path and the early reflections exactly; from the time
where that order stops being complete, a diffuse tail (Gaussian noise under an exponential
envelope that falls 60 dB in ``rt60`` seconds) takes over, its level fitted to the image-source
energy just before the switch. Full-order image sources for a small 0.9 s room take ~15 s per
RIR; this takes a few ms and still has the room's RT60 (checked with
``pra.experimental.measure_rt60`` in the tests).

Each RIR is stored with unit energy, starting shortly before its direct path: ``delay`` is the
index of the direct path, so :func:`seqflow.audio.augment.reverberate` keeps the waveform's
timing (segment times stay valid).

A :class:`RirBank` is a deterministic set of RIRs from ``(seed, name, size, room ranges)``, cached
as one ``.npz`` per key. The ``train`` bank reverberates train clips; the ``eval`` bank (another
random stream) reverberates val and test clips, so the threshold calibrated on val and the test
metrics are measured in rooms the model never trained in.

>>> bank = RirBank.load_or_build("cache/rirs", "train", size=300, seed=1234)   # doctest: +SKIP
>>> rir, delay = bank.sample(np.random.default_rng(0))                         # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
import zlib
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from seqflow.errors import ConfigError

log = logging.getLogger(__name__)

SPEED_OF_SOUND = 343.0  # m/s
PRE_DELAY = 40          # samples kept before the direct-path peak (half of pra's fractional-delay filter)
BANK_NAMES = ("train", "eval")


@dataclass(frozen=True)
class RoomSpec:
    """Ranges rooms are drawn from (uniformly): RT60 [s], dimensions [m] per axis, source-mic
    distance [m]; ``image_order``: image-source reflection order before the diffuse tail;
    ``wall_margin``: minimum distance of source and mic from every wall [m]."""

    rt60: tuple[float, float] = (0.2, 0.9)
    dims_min: tuple[float, float, float] = (3.0, 3.0, 2.4)
    dims_max: tuple[float, float, float] = (10.0, 8.0, 4.0)
    distance: tuple[float, float] = (0.5, 4.0)
    image_order: int = 10
    wall_margin: float = 0.4

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> "RoomSpec":
        """From a mapping with any of the field names (``augment.rooms``); lists become tuples."""
        cfg = dict(cfg or {})
        unknown = set(cfg) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"augment.rooms: unknown key(s) {sorted(unknown)}")
        kw = {k: int(v) if k == "image_order" else float(v) if k == "wall_margin" else tuple(float(x) for x in v)
              for k, v in cfg.items()}
        spec = cls(**kw)
        lo, hi = spec.rt60
        if not (0.05 <= lo <= hi <= 3.0) or spec.image_order < 1 or len(spec.dims_min) != 3 \
                or any(a > b for a, b in zip(spec.dims_min, spec.dims_max)):
            raise ConfigError(f"augment.rooms: bad ranges {asdict(spec)}")
        return spec

    def key(self, sample_rate: int) -> str:
        """8-hex digest of the ranges, the sample rate and the pyroomacoustics version."""
        blob = json.dumps({**asdict(self), "sr": sample_rate, "pra": version("pyroomacoustics")}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:8]


def room_rir(dims, rt60: float, source, mic, sr: int, rng: np.random.Generator,
             image_order: int = 10) -> tuple[np.ndarray, int]:
    """One hybrid RIR (image sources up to ``image_order``, then a fitted diffuse tail).

    Args:
        dims: room size ``(x, y, z)`` [m]; rt60: reverberation time [s]; source / mic: positions [m].
        rng: draws the tail's noise.

    Returns:
        ``(rir, delay)``: float32 ``(L,)`` with unit energy, direct-path peak at index ``delay``;
        ``L`` covers the direct path plus ``1.1 * rt60`` seconds.

    Raises:
        ValueError: pyroomacoustics cannot reach ``rt60`` in this room (too large / too dry).
    """
    import pyroomacoustics as pra

    dims = np.asarray(dims, dtype=float)
    absorption, full_order = pra.inverse_sabine(rt60, dims)
    room = pra.ShoeBox(dims, fs=sr, materials=pra.Material(absorption), max_order=min(full_order, image_order))
    room.add_source(list(source))
    room.add_microphone(list(mic))
    room.compute_rir()
    ism = np.asarray(room.rir[0][0], dtype=np.float64)
    peak = int(np.argmax(np.abs(ism)))
    t_direct = peak / sr
    # every image within this radius has order <= image_order: the ISM is complete until then
    complete_s = image_order / float(np.sum(1.0 / dims)) / SPEED_OF_SOUND
    t_mix = max(complete_s, t_direct + 0.02)
    length = int(np.ceil((t_direct + 1.1 * rt60) * sr))
    length = max(length, int(t_mix * sr) + 1)
    h = np.zeros(length)
    h[:min(length, len(ism))] = ism[:length]
    t = np.arange(length) / sr
    decay = np.exp(-6.0 * np.log(10.0) * t / rt60)  # energy envelope: -60 dB per rt60
    window = (t >= max(t_mix / 2, t_direct + 0.003)) & (t < t_mix)
    level = np.sum(h[window] ** 2) / max(np.sum(decay[window]), 1e-30)  # fitted energy per sample at t = 0
    tail = rng.standard_normal(length) * np.sqrt(level * decay)
    fade = np.clip((t - t_mix) / 0.01, 0.0, 1.0)  # 10 ms power-complementary crossfade
    h = h * np.cos(0.5 * np.pi * fade) + tail * np.sin(0.5 * np.pi * fade)
    start = max(0, peak - PRE_DELAY)
    h = h[start:]
    energy = float(np.sqrt(np.sum(h ** 2)))
    return (h / energy).astype(np.float32) if energy > 0 else h.astype(np.float32), peak - start


def _draw_room(rng: np.random.Generator, spec: RoomSpec) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    dims = rng.uniform(spec.dims_min, spec.dims_max)
    rt60 = float(rng.uniform(*spec.rt60))
    m = spec.wall_margin
    mic = rng.uniform([m, m, 0.5], [dims[0] - m, dims[1] - m, min(2.0, dims[2] - m)])
    for _ in range(100):  # a source at a distance from the drawn range, inside the room
        d = float(rng.uniform(*spec.distance))
        v = rng.standard_normal(3)
        v[2] *= 0.3  # mostly horizontal
        src = mic + d * v / np.linalg.norm(v)
        if np.all(src >= [m, m, 0.5]) and np.all(src <= [dims[0] - m, dims[1] - m, min(2.0, dims[2] - m)]):
            return dims, rt60, mic, src
    src = rng.uniform([m, m, 0.5], [dims[0] - m, dims[1] - m, min(2.0, dims[2] - m)])
    return dims, rt60, mic, src


@dataclass
class RirBank:
    """A fixed, deterministic set of RIRs. ``rirs[i]``: float32 unit-energy RIR whose direct path
    is at ``delays[i]``; ``rt60`` [s], ``dims`` [m] and ``distance`` [m] describe room ``i``."""

    name: str
    rirs: list[np.ndarray]
    delays: np.ndarray
    rt60: np.ndarray
    dims: np.ndarray
    distance: np.ndarray

    def __len__(self) -> int:
        return len(self.rirs)

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """A random ``(rir, delay)``; an empty bank gives an empty RIR."""
        if not self.rirs:
            return np.zeros(0, dtype=np.float32), 0
        i = int(rng.integers(0, len(self.rirs)))
        return self.rirs[i], int(self.delays[i])

    def digests(self) -> set[str]:
        """sha1 of every RIR's bytes (to check two banks share none)."""
        return {hashlib.sha1(r.tobytes()).hexdigest() for r in self.rirs}

    @classmethod
    def build(cls, name: str, size: int, seed: int, sample_rate: int = 16000,
              rooms: RoomSpec | Mapping | None = None) -> "RirBank":
        """Simulate ``size`` rooms from the random stream ``(seed, crc32(name))``: banks of
        different names (``train``, ``eval``) never share a room."""
        spec = rooms if isinstance(rooms, RoomSpec) else RoomSpec.from_config(rooms)
        rng = np.random.default_rng([int(seed), zlib.crc32(f"rirs-{name}".encode())])
        rirs, delays, rt60s, dims_all, dists = [], [], [], [], []
        while len(rirs) < int(size):
            dims, rt60, mic, src = _draw_room(rng, spec)
            try:
                rir, delay = room_rir(dims, rt60, src, mic, sample_rate, rng, spec.image_order)
            except ValueError:  # room too large for this RT60: draw another
                continue
            rirs.append(rir)
            delays.append(delay)
            rt60s.append(rt60)
            dims_all.append(dims)
            dists.append(float(np.linalg.norm(src - mic)))
        return cls(name, rirs, np.asarray(delays, dtype=np.int64), np.asarray(rt60s),
                   np.asarray(dims_all).reshape(-1, 3), np.asarray(dists))

    @staticmethod
    def cache_path(cache_dir: str | Path, name: str, size: int, seed: int, sample_rate: int = 16000,
                   rooms: RoomSpec | Mapping | None = None) -> Path:
        """``<cache_dir>/rirs-<name>-s<seed>-n<size>-<ranges key>.npz``."""
        spec = rooms if isinstance(rooms, RoomSpec) else RoomSpec.from_config(rooms)
        return Path(cache_dir) / f"rirs-{name}-s{int(seed)}-n{int(size)}-{spec.key(sample_rate)}.npz"

    @classmethod
    def load_or_build(cls, cache_dir: str | Path, name: str, size: int, seed: int, sample_rate: int = 16000,
                      rooms: RoomSpec | Mapping | None = None) -> "RirBank":
        """The cached bank, or build it and write the cache atomically (an unreadable cache file
        is rebuilt). A cached bank is bit-identical to a freshly built one."""
        path = cls.cache_path(cache_dir, name, size, seed, sample_rate, rooms)
        if path.is_file():
            try:
                with np.load(path) as z:
                    offsets = z["offsets"]
                    flat = z["flat"]
                    return cls(name, [flat[a:b] for a, b in zip(offsets[:-1], offsets[1:])], z["delays"],
                               z["rt60"], z["dims"], z["distance"])
            except Exception as exc:  # truncated or foreign file: rebuild
                log.warning("rirs: rebuilding unreadable cache %s (%s)", path, exc)
        t0 = time.perf_counter()
        bank = cls.build(name, size, seed, sample_rate, rooms)
        offsets = np.cumsum([0] + [len(r) for r in bank.rirs])
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, flat=np.concatenate(bank.rirs) if bank.rirs else np.zeros(0, np.float32),
                         offsets=offsets, delays=bank.delays, rt60=bank.rt60, dims=bank.dims, distance=bank.distance)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        log.info("rirs: built %s bank of %d rooms in %.1f s -> %s", name, len(bank), time.perf_counter() - t0, path)
        return bank
