"""Training logic of the speech-embedding trigger-word model: the course's frame BCE, on frozen
pretrained embeddings computed on the training device.

Everything but the front end is :class:`seqflow.lit.trigger_word.TriggerWordModule`: labels from
the positive end times at the net's step geometry (``StepGeometry(76, 8)`` at a 10 ms hop: one
step per 80 ms embedding), BCE-with-logits over each clip's valid steps, the same metrics and
optimisers. The front end (:class:`~seqflow.models.speech_embedding.SpeechEmbeddingFrontEnd`)
takes the log-mel's place: it has the same call contract (``(wav, lengths)`` → ``(features,
frame_lengths)``), no trainable parameters and no persistent state (checkpoints hold ``net.*``
and nothing of it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from seqflow.lit.trigger_word import TriggerWordModule
from seqflow.models.speech_embedding import HOP_LENGTH, SAMPLE_RATE, build_front_end


class EmbeddingTriggerWordModule(TriggerWordModule):
    """:class:`TriggerWordModule` whose features are frozen speech embeddings ``(B, T', 96)``.

    Args:
        net: a head mapping ``(B, T', 96)`` → ``(logits (B, T'), h_n)`` with the front end's step
            geometry (:class:`~seqflow.models.speech_embedding.EmbeddingTriggerNet`).
        embedding: front-end settings (``cfg.model.embedding``: ``input_scale``, ``floor_db``).
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
        self.logmel = build_front_end(embedding)  # replaces the log-mel: same (wav, lengths) contract
