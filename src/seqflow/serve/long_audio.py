"""Files of any length through a loaded model, in bounded memory: what ``seqflow detect`` and
``seqflow transcribe`` run.

A file is read in blocks (:class:`seqflow.audio.blocks.AudioBlocks`: decode, down-mix, resample to
16 kHz); detection pushes the blocks through :meth:`TriggerWordDetector.stream` (detections with
offline ``detect()`` semantics: ``end`` = the fall below threshold, ``score`` = the run's max);
transcription runs :meth:`Transcriber.transcribe_long` (overlapping windows, joined). Peak memory
is the model plus a few blocks/windows, whatever the file's length (docs/long-audio.md).
"""

from __future__ import annotations

from typing import Any

from seqflow.audio.blocks import AudioBlocks
from seqflow.errors import ConfigError

BLOCK_S = 10.0  # seconds of source audio decoded at a time


def open_audio(path: str, block_s: float = BLOCK_S) -> AudioBlocks:
    """Open ``path`` for block reading at 16 kHz (header checked; raises AudioDecodeError)."""
    return AudioBlocks(path, target_sr=16000, block_s=block_s)


def unwrap(model: Any, attribute: str):
    """The seqflow object (``detector`` / ``transcriber``) inside a loaded MLflow pyfunc (or the
    object itself when it is one already).

    Raises:
        ConfigError: the model is not a seqflow pyfunc of that kind (names the attribute).
    """
    inner = model.unwrap_python_model() if hasattr(model, "unwrap_python_model") else model
    obj = getattr(inner, attribute, None)
    if obj is None:
        raise ConfigError(f"the model is not a seqflow {attribute} pyfunc (it has no .{attribute})")
    return obj


def detect_file(detector, reader: AudioBlocks, threshold: float | None = None) -> list[dict]:
    """Detections ``[{"start", "end", "score"}]`` [s] of a whole file, streamed block by block;
    equal to ``detector.detect(whole_waveform)``.

    Raises:
        AudioDecodeError: decoding failed part-way (see :class:`AudioBlocks`).
    """
    stream = detector.stream(threshold)
    out: list[dict] = []
    for block in reader:
        stream.push(block)
        out += stream.pop_completed()
    stream.flush()
    return out + stream.pop_completed()


def transcribe_file(transcriber, reader: AudioBlocks) -> str:
    """Transcript of a whole file in overlapping windows (:meth:`Transcriber.transcribe_long`).

    Raises:
        AudioDecodeError: decoding failed part-way (see :class:`AudioBlocks`).
    """
    return transcriber.transcribe_long(iter(reader))
