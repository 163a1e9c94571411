"""Evaluation-only audio from Debian packages and a held-out TTS engine (never used for training).

* :func:`build_eval_data` — fetch, unpack and build the real-audio sets
  (``real_speech_negatives``, ``real_noise``, ``real_words_en``) under ``eval-data/``;
  ``python -m seqflow.evalsets`` / ``make eval-data``.
* :func:`build_heldout_engine` — render ``(key, text)`` items with festival (3 voices).
* :class:`EvalDataUnavailable` — packages or festival cannot be obtained here (one-line reason).

See ``docs/eval-data.md`` for the packages, their licences and sizes.
"""

from seqflow.evalsets.debian import EvalDataUnavailable, extract, fetch_packages
from seqflow.evalsets.builders import SETS, Caps, build_set
from seqflow.evalsets.build import build_eval_data
from seqflow.evalsets.festival import build_heldout_engine

__all__ = ["EvalDataUnavailable", "SETS", "Caps", "build_eval_data", "build_heldout_engine", "build_set",
           "extract", "fetch_packages"]
