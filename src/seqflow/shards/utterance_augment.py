"""On-the-fly waveform augmentation of speech-recognition training utterances (train split only).

Trigger-word clips are augmented once, at the shard stage (:mod:`seqflow.shards.clips`). ASR
utterances keep their shards as recorded and are augmented in the **train** loader instead, anew
every epoch, by the ``augment.utterances`` chain of :mod:`seqflow.audio.augment` (any of speed,
pitch, reverb, noise, eq, bandlimit, telephone, gain, each with its probability ``p``). The val and
test loaders never get one (:class:`~seqflow.shards.reader.ShardBatches` refuses an augmenter on a
split other than ``train``), so validation and test audio is byte for byte what the shards hold.

* Transcripts never change. A speed change that leaves an utterance too short for its tokens under
  CTC (:func:`~seqflow.models.ctc.ctc_feasible` at ``model.features.hop_length``) is undone: the
  utterance keeps its recorded speed (counted as ``speed_infeasible``); the rest of the chain runs.
* Randomness: utterance ``key`` seen for the ``n``-th time in an epoch by a dataloader worker draws
  from ``np.random.default_rng([seed, epoch, rank, crc32(key), n, crc32("utterance-augment")])``: a
  rerun gives the same audio, another epoch other augmentations.
* Rooms and noise: the ``train`` RIR bank (``augment.cache_dir``, the bank clips use) and the noise
  recordings of ``augment.noise_dirs`` / ``augment.optional_noise_dirs`` are loaded once per rank,
  when the train loader is built, before its dataloader workers start (forked workers share them;
  never loaded per sample).
* Memory under dynamic batching: augmentation runs before bucketing, so buckets and the padded-seconds
  limit ``batching.batch_seconds`` see the **actual** (speed-changed) durations and a batch never
  exceeds it. The number of batches per rank still comes from ``index.json`` (recorded durations),
  so every rank yields the same count; speed factors in [0.9, 1.1] change the seconds of an epoch by
  well under ``batching.margin``.
* Counts: every augmented sample carries ``{"applied_<t>", "skipped_<t>", "speed_infeasible"}`` counts
  (:data:`COUNT_NAMES`); the loader sums them per batch (``augment_counts``) and
  :class:`~seqflow.lit.asr.ASRModule` logs their sum over ranks once per epoch (``augment/*``).
  ``skipped``: the transform produced NaN/inf or silence and was left out (see :mod:`seqflow.audio.augment`).

Switches: ``augment.enabled`` (all augmentation) and ``augment.utterances.enabled``. The settings are
MLflow params of the training run (every config value is, ``augment.utterances.*``); the ASR shard hash
does not include them (shards are unchanged).

>>> aug = UtteranceAugment({"gain": {"p": 1.0, "dbfs": [-30, -20]}}, sample_rate=16000, hop_length=160, seed=0)
>>> wav, counts = aug(np.full(16000, 0.1, np.float32), [3, 4], key="train-000001-a", epoch=0, rank=0)
>>> wav.shape, counts
((16000,), {'applied_gain': 1})
"""

from __future__ import annotations

import logging
import zlib
from collections import Counter
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from seqflow.audio.augment import TRANSFORMS, Augmenter, stage_config
from seqflow.audio.io import read_audio
from seqflow.audio.rooms import RirBank
from seqflow.errors import AudioDecodeError
from seqflow.models.ctc import ctc_feasible
from seqflow.shards.clips import PEAK_LIMIT, noise_files, train_noise_dirs

log = logging.getLogger(__name__)

STREAM = zlib.crc32(b"utterance-augment")  # extra seed word of this augmentation's random stream
COUNT_NAMES = tuple(f"{kind}_{t}" for kind in ("applied", "skipped") for t in TRANSFORMS) + ("speed_infeasible",)
BANK = "train"


def utterance_chain(augment: Mapping[str, Any] | None) -> dict[str, dict[str, Any]] | None:
    """The ``augment.utterances`` chain as ``{transform: params}`` (:func:`stage_config`), or ``None``
    when ``augment`` is missing, ``augment.enabled`` or ``augment.utterances.enabled`` is false,
    or no transform has ``p > 0``.

    Raises:
        ConfigError: (when the chain is built) an unknown transform or key, a bad probability.
    """
    if not augment or not augment.get("enabled", False):
        return None
    node = dict(augment.get("utterances") or {})
    if not node.pop("enabled", True):
        return None
    chain = stage_config(node, "augment.utterances")
    return chain if any(float(v.get("p", 0.0)) > 0 for v in chain.values()) else None


def load_noises(augment: Mapping[str, Any], sample_rate: int) -> list[np.ndarray]:
    """Every recording of ``augment.noise_dirs`` and the existing ``optional_noise_dirs``, decoded to
    mono float32 at ``sample_rate`` [Hz]; undecodable files are skipped with a warning.

    Raises:
        ShardError: a ``noise_dirs`` entry is not a folder.
    """
    out = []
    for _, f in noise_files(train_noise_dirs(augment)):
        try:
            out.append(read_audio(f, target_sr=sample_rate)[0])
        except AudioDecodeError as exc:
            log.warning("utterance augmentation: skipped undecodable noise file: %s", exc)
    return out


class UtteranceAugment:
    """The train loader's per-utterance augmentation (see the module doc).

    Args:
        chain: ``{transform: {"p", <ranges>}}`` (:func:`utterance_chain`); ``speed`` runs first and
            is checked for CTC feasibility, then the other transforms in :data:`TRANSFORMS` order.
        sample_rate: of the utterances [Hz]. hop_length: log-mel hop [samples] for the CTC check.
        seed: the run's seed. rirs: the bank ``reverb`` draws from (required when it has ``p > 0``).
        noises: recordings ``noise`` draws from (float32 at ``sample_rate``); none: ``noise`` is inactive.

    Raises:
        ConfigError: an unknown transform or key, a bad probability, reverb without a bank.
    """

    def __init__(self, chain: Mapping[str, Mapping[str, Any]], sample_rate: int, hop_length: int, seed: int,
                 rirs: RirBank | None = None, noises: Sequence[np.ndarray] = ()) -> None:
        self.chain = {k: dict(v) for k, v in chain.items()}
        self.sample_rate, self.hop_length, self.seed = int(sample_rate), int(hop_length), int(seed)
        where = "augment.utterances"
        self.speed = Augmenter({k: v for k, v in self.chain.items() if k == "speed"}, sample_rate, where=where)
        self.rest = Augmenter({k: v for k, v in self.chain.items() if k != "speed"}, sample_rate, rirs, noises,
                              where=where)

    @classmethod
    def from_config(cls, cfg) -> "UtteranceAugment | None":
        """Build from the composed config (``augment.*``, ``audio.sample_rate``,
        ``model.features.hop_length``, ``seed``), loading the train RIR bank (from ``augment.cache_dir``,
        built there if missing, ~2 s) and the noise recordings; ``None`` when :func:`utterance_chain` is."""
        from omegaconf import OmegaConf

        a = OmegaConf.to_container(cfg.augment, resolve=True) if "augment" in cfg else None
        chain = utterance_chain(a)
        if chain is None:
            return None
        sr, seed = int(cfg.audio.sample_rate), int(cfg.seed)
        bank = None
        if float(chain.get("reverb", {}).get("p", 0.0)) > 0:
            bank = RirBank.load_or_build(a["cache_dir"], BANK, int(a["rir_bank_size"]), seed, sr, a.get("rooms"))
        noises = load_noises(a, sr) if float(chain.get("noise", {}).get("p", 0.0)) > 0 else []
        aug = cls(chain, sr, int(cfg.model.features.hop_length), seed, bank, noises)
        log.info("utterance augmentation (train loader): %s; %d RIRs, %d noise recordings (%.0f s)",
                 ", ".join(f"{t} p={aug.chain[t]['p']}" for t in aug.active), len(bank or ()), len(noises),
                 sum(len(n) for n in noises) / sr)
        return aug

    @property
    def active(self) -> tuple[str, ...]:
        """Transforms that can fire, in chain order."""
        return self.speed.active + self.rest.active

    def __call__(self, wav: np.ndarray, token_ids: Sequence[int] | None, key: str, epoch: int, rank: int,
                 occurrence: int = 0) -> tuple[np.ndarray, dict[str, int]]:
        """Augment one utterance.

        Args:
            wav: ``(S,)`` float32 at ``sample_rate`` (not modified).
            token_ids: its transcript's ids (for the CTC check of a speed change; ``None``: no check).
            key: the sample key; epoch / rank / occurrence: see the module doc (random stream).

        Returns:
            ``(wav (S',) float32, counts)``: ``S' ≈ S / factor`` when a speed change was kept, else
            ``S' = S``; peak at most 0.99; ``counts``: the non-zero :data:`COUNT_NAMES` of this call.
        """
        rng = np.random.default_rng([self.seed, int(epoch), int(rank), zlib.crc32(str(key).encode()),
                                     int(occurrence), STREAM])
        counts: Counter = Counter()
        out = np.asarray(wav, dtype=np.float32)
        for stage in (self.speed, self.rest):
            if not stage:
                continue
            before = Counter(stage.skipped)
            y = stage(out, rng)
            counts.update({f"skipped_{t}": n for t, n in (stage.skipped - before).items()})
            applied = [step["name"] for step in stage.last]
            if stage is self.speed and applied and token_ids is not None \
                    and not ctc_feasible(len(y), token_ids, self.hop_length):
                counts["speed_infeasible"] += 1
                continue  # keep the recorded speed
            counts.update(f"applied_{t}" for t in applied)
            out = y
        peak = float(np.max(np.abs(out))) if out.size else 0.0
        if peak > PEAK_LIMIT:
            out = (out * np.float32(PEAK_LIMIT / peak)).astype(np.float32)
        if out is wav:
            out = out.copy()
        return out, dict(counts)

    def stream(self, samples: Iterable[dict], epoch: int, rank: int,
               token_ids: Callable[[dict], Sequence[int] | None]) -> Iterator[dict]:
        """Augment a stream of reader samples ``{"key", "wav", "meta", "text"}`` (one dataloader
        worker's, one epoch): yields copies with the new ``wav`` and ``augment`` (the counts);
        ``token_ids(sample)`` gives the ids for the CTC check."""
        seen: Counter = Counter()
        for sample in samples:
            key = str(sample["key"])
            wav, counts = self(sample["wav"], token_ids(sample), key, epoch, rank, seen[key])
            seen[key] += 1
            yield {**sample, "wav": wav, "augment": counts}

