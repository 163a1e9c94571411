"""Data sources of the prepare stage, chosen by ``data.source`` (Hydra group ``data``).

- ``synthetic`` (default): offline TTS corpus, no input (:mod:`seqflow.data.synthetic`);
- ``manifest``: NeMo JSONL file(s) (:mod:`seqflow.data.sources.manifest`);
- ``librispeech``: ``*.trans.txt`` tree(s) (:mod:`seqflow.data.sources.librispeech`);
- ``folder``: audio files with a sibling ``.txt`` (:mod:`seqflow.data.sources.folder`);
- ``speech_commands``: one folder per word (:mod:`seqflow.data.sources.speech_commands`).

Every source writes the same corpus layout under ``data.root``: ``manifest.jsonl``, ``audio/...``,
``corpus.json`` and (user sources) prepare-stage rows in ``quarantine.jsonl``.

>>> cfg = load_config(["data=folder", "data.path=recordings"])   # doctest: +SKIP
>>> manifest = prepare_source(cfg.data, cfg.audio.sample_rate, cfg.seed)   # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from omegaconf import DictConfig

from seqflow.errors import ConfigError

SOURCES = ("synthetic", "manifest", "librispeech", "folder", "speech_commands")


def _builder(source: str) -> Callable[..., Path]:
    if source == "synthetic":
        from seqflow.data.synthetic import build_synthetic_corpus
        return build_synthetic_corpus
    if source == "manifest":
        from seqflow.data.sources.manifest import prepare_manifest
        return prepare_manifest
    if source == "librispeech":
        from seqflow.data.sources.librispeech import prepare_librispeech
        return prepare_librispeech
    if source == "folder":
        from seqflow.data.sources.folder import prepare_folder
        return prepare_folder
    if source == "speech_commands":
        from seqflow.data.sources.speech_commands import prepare_speech_commands
        return prepare_speech_commands
    raise ConfigError(f"unknown data.source {source!r}; choose one of: {', '.join(SOURCES)} "
                      f"(e.g. seqflow pipeline data=manifest data.path=train.jsonl)")


def check_source_config(cfg_data: DictConfig, sample_rate: int) -> None:
    """Fail fast on a bad ``data`` config, before any work: unknown source, unset or missing ``data.path``,
    bad ``data.speaker_split`` (user sources), every synthetic key (synthetic).

    Raises:
        ConfigError: naming the key and the valid choices.
    """
    source = str(cfg_data.get("source"))
    _builder(source)
    if source == "synthetic":
        from seqflow.data.synthetic import validate_config
        from seqflow.data.tts import EspeakTTS

        validate_config(cfg_data, sample_rate, EspeakTTS())
        return
    from seqflow.data.sources.common import config_dict, source_paths, speaker_fractions

    raw = config_dict(cfg_data)
    source_paths(raw, source, want="file" if source == "manifest" else "dir")
    speaker_fractions(raw)


def prepare_source(cfg_data: DictConfig, sample_rate: int, seed: int, progress: bool = True) -> Path:
    """Build or ingest the corpus of ``cfg_data.source`` under ``cfg_data.root``; returns ``manifest.jsonl``'s path.

    Args:
        cfg_data: the ``data`` config group (``conf/data/<source>.yaml``).
        sample_rate: target rate [Hz] (synthetic renders at it; user audio is copied as is and resampled on read).
        seed: global seed (voices, speaker splits).
        progress: show a tqdm bar.

    Raises:
        ConfigError: unknown source (lists the options) or a bad ``data.*`` value.
        DataValidationError: a user source with no usable utterance, or one that dropped more than
            ``data.max_bad_fraction`` of its items (message names ``data.path``, counts and the quarantine file).
    """
    return _builder(str(cfg_data.get("source")))(cfg_data, sample_rate, seed, progress=progress)
