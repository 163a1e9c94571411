"""Training logic of the speech-embedding trigger-word model: the course's frame BCE, on frozen
pretrained embeddings computed on the training device.

Everything but the front end is :class:`seqflow.lit.trigger_word.TriggerWordModule`: labels from
the positive end times at the net's step geometry (``StepGeometry(76, 8)`` at a 10 ms hop: one
step per 80 ms embedding), BCE-with-logits over each clip's valid steps, the same metrics and
optimisers. The front end (:class:`~seqflow.models.speech_embedding.SpeechEmbeddingFrontEnd`)
takes the log-mel's place: it has the same call contract (``(wav, lengths)`` → ``(features,
frame_lengths)``), no trainable parameters and no persistent state (checkpoints hold ``net.*``
and nothing of it).

The frozen CNN costs more than the GRU head on a CPU, and clips come back every epoch unchanged
(augmentation happens at shard time), so on CPU the embeddings of each clip are kept in memory
(:class:`CachedFrontEnd`, ``cache_mb`` per rank, keyed by the clip's audio content so a changed
clip is never served stale embeddings). On CUDA the front end is cheap and runs every step.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from seqflow.lit.trigger_word import TriggerWordModule
from seqflow.models.speech_embedding import HOP_LENGTH, SAMPLE_RATE, SpeechEmbeddingFrontEnd, build_front_end


class CachedFrontEnd(nn.Module):
    """A :class:`SpeechEmbeddingFrontEnd` with an in-memory cache of each clip's embeddings.

    Same call contract and attributes as the front end. A padded batch row is looked up by a hash
    of its samples (content and padded width), so hits are exact; rows not found are embedded
    together in one call. The cache fills until ``max_bytes`` and then stops adding (an epoch
    visits clips cyclically: evicting would only thrash). Only CPU tensors are cached; the cache
    is never pickled (Ray ships the module to its workers empty).

    Attributes: ``hits``, ``misses`` (rows), ``nbytes`` (cached embedding bytes).
    """

    def __init__(self, front_end: SpeechEmbeddingFrontEnd, max_bytes: int) -> None:
        super().__init__()
        self.front_end, self.max_bytes = front_end, int(max_bytes)
        self._cache: dict[bytes, torch.Tensor] = {}
        self.hits = self.misses = self.nbytes = 0

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("front_end"), name)  # sample_rate, hop_length, num_steps, ...

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_cache"], state["nbytes"] = {}, 0
        return state

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.max_bytes <= 0 or wav.device.type != "cpu" or wav.shape[0] == 0:
            return self.front_end(wav, lengths)
        rows = wav.detach().float().contiguous().numpy()
        keys = [hashlib.blake2b(r.tobytes(), digest_size=16).digest() + r.shape[0].to_bytes(8, "little") for r in rows]
        missing = [i for i, k in enumerate(keys) if k not in self._cache]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        fresh: dict[int, torch.Tensor] = {}
        if missing:
            emb, _ = self.front_end(wav[missing])
            for j, i in enumerate(missing):
                fresh[i] = emb[j]
                size = emb[j].numel() * emb[j].element_size()
                if self.nbytes + size <= self.max_bytes:
                    self._cache[keys[i]] = emb[j].clone()
                    self.nbytes += size
        out = torch.stack([fresh[i] if i in fresh else self._cache[k] for i, k in enumerate(keys)])
        if lengths is None:
            lengths = torch.full((wav.shape[0],), wav.shape[1], dtype=torch.long)
        return out, self.front_end.num_frames(lengths.long()).clamp(max=1 + wav.shape[1] // HOP_LENGTH)


class EmbeddingTriggerWordModule(TriggerWordModule):
    """:class:`TriggerWordModule` whose features are frozen speech embeddings ``(B, T', 96)``.

    Args:
        net: a head mapping ``(B, T', 96)`` → ``(logits (B, T'), h_n)`` with the front end's step
            geometry (:class:`~seqflow.models.speech_embedding.EmbeddingTriggerNet`).
        embedding: front-end settings (``cfg.model.embedding``: ``input_scale``, ``floor_db``,
            ``cache_mb`` — per-rank memory for cached clip embeddings on CPU, 0 for none).
        spec_augment: SpecAugment settings applied to the embedding sequence while training (time
            masks over steps, "frequency" masks over embedding dimensions); ``None``: none.
        lr, weight_decay, pos_weight, scheduler, label_seconds: as :class:`TriggerWordModule`.
    """

    def __init__(self, net: nn.Module, embedding: Mapping[str, Any] | None = None,
                 spec_augment: Mapping[str, Any] | None = None, lr: float = 1e-3, weight_decay: float = 1e-4,
                 pos_weight: float = 1.0, scheduler: str = "none", label_seconds: float = 2.0) -> None:
        features = {"sample_rate": SAMPLE_RATE, "hop_length": HOP_LENGTH}
        super().__init__(net, features, spec_augment, lr=lr, weight_decay=weight_decay, pos_weight=pos_weight,
                         scheduler=scheduler, label_seconds=label_seconds)
        cache_mb = float((embedding or {}).get("cache_mb") or 0)
        front_end = build_front_end(embedding)
        # replaces the log-mel: same (wav, lengths) -> (features, frame_lengths) contract
        self.logmel = CachedFrontEnd(front_end, int(cache_mb * 2**20)) if cache_mb > 0 else front_end

    @property
    def front_end(self) -> SpeechEmbeddingFrontEnd:
        fe = self.logmel
        return fe.front_end if isinstance(fe, CachedFrontEnd) else fe
