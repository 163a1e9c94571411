"""What the Piper voice says in the synthetic corpus: one :class:`PiperJob` per render, planned
deterministically (train and val only; the test split stays espeak's held-out voices)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PiperJob:
    """One Piper render: ``index`` numbers it within its split, kind and voice (file name)."""

    split: str
    kind: str  # positive | negative | utterance
    index: int
    text: str  # manifest text (the raw sentence for utterances)
    spoken: str  # what Piper reads
    voice: str  # key of seqflow.data.piper_tts.PIPER_VOICES
    length_scale: float
    noise_scale: float
    noise_width: float

    @property
    def key(self) -> str:
        """Sample key, e.g. ``train-positive-piper-joe-000042``."""
        return f"{self.split}-{self.kind}-piper-{self.voice}-{self.index:06d}"

    @property
    def rel(self) -> str:
        """Audio path relative to the corpus root."""
        return f"audio/{self.split}/{self.kind}/{self.key}.flac"


def plan_piper(spec: dict, negatives: list[str], sentences: list[tuple[str, str]], seed: int) -> list[PiperJob]:
    """What each Piper voice says, with which parameters; deterministic for ``spec`` and ``seed``.

    Per voice: ``piper.positives`` trigger words, ``piper.negatives`` negatives (every word of
    ``negatives`` in turn, in a random order per round), and its own ``piper.sentences`` of
    ``sentences`` (``(raw, normalised)`` pairs); each kind split train/val by ``piper.split``.

    Returns:
        jobs in render order (split, voice, kind, index); empty when Piper is not enabled.
    """
    from seqflow.data.synthetic import KINDS, SPLITS, _seed  # the corpus's split/kind order and seeding

    p = spec["piper"]
    if not p:
        return []
    jobs: list[PiperJob] = []
    for vi, voice in enumerate(p["voices"]):
        rng = _seed(seed, "piper", voice, "negatives")
        order: list[int] = []
        while negatives and len(order) < p["negatives"]:
            order += [int(i) for i in rng.permutation(len(negatives))]
        trig = spec["trigger_word"]
        texts = {"positive": [(trig, trig)] * p["positives"],
                 "negative": [(negatives[i], negatives[i]) for i in order[: p["negatives"]]],
                 "utterance": sentences[vi * p["sentences"]: (vi + 1) * p["sentences"]]}
        for kind, items in texts.items():
            rng = _seed(seed, "piper", voice, kind)
            n_train = len(items) - int(round(len(items) * p["split"]["val"]))
            for k, (text, spoken) in enumerate(items):
                ls, ns, nw = (round(float(rng.uniform(*p[key])), 3)
                              for key in ("length_scales", "noise_scales", "noise_widths"))
                split, index = ("train", k) if k < n_train else ("val", k - n_train)
                jobs.append(PiperJob(split, kind, index, text, spoken, voice, ls, ns, nw))
    return sorted(jobs, key=lambda j: (SPLITS.index(j.split), p["voices"].index(j.voice), KINDS.index(j.kind),
                                       j.index))
