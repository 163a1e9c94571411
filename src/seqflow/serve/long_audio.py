"""Files of any length through a loaded model, in bounded memory: what ``seqflow detect`` and
``seqflow transcribe`` run.

A file is read in blocks (:class:`seqflow.audio.blocks.AudioBlocks`: decode, down-mix, resample to
16 kHz); detection pushes the blocks through :meth:`TriggerWordDetector.stream` (detections with
offline ``detect()`` semantics: ``end`` = the fall below threshold, ``score`` = the run's max);
transcription runs :meth:`Transcriber.transcribe_long` (overlapping windows, joined). Peak memory
is the model plus a few blocks/windows, whatever the file's length (docs/long-audio.md).

With ``progress=True`` a tqdm bar on **stderr** follows the seconds of audio consumed out of the
file's length (stdout, which may be piped, stays clean); the CLI shows it when stderr is a terminal
or with ``--progress``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

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


PROGRESS_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s of audio [{elapsed}<{remaining}]"


def _screen() -> dict:
    """tqdm's ``ncols``/``nrows`` for stderr: the terminal's size, 80 x 24 where it reports 0 x 0 (a
    pseudo-terminal nobody sized, on which tqdm draws nothing); tqdm's defaults off a terminal."""
    try:
        size = os.get_terminal_size(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return {}
    return {"ncols": size.columns or 80, "nrows": size.lines or 24}


def progress_blocks(reader: AudioBlocks, show: bool = False, desc: str = "") -> Iterator[np.ndarray]:
    """The reader's ``(S_i,)`` blocks, unchanged; with ``show`` a tqdm bar on stderr counts the
    seconds of audio [s] the consumer has taken, out of ``reader.duration_s``, and ends at 100 %.

    Raises:
        AudioDecodeError: as iterating ``reader`` does (the bar is closed first).
    """
    if not show:
        yield from reader
        return
    from tqdm import tqdm

    total = reader.duration_s
    done = 0.0
    with tqdm(total=total, desc=desc or Path(reader.path).name, file=sys.stderr, bar_format=PROGRESS_FORMAT,
              mininterval=0.5, **_screen()) as bar:
        for block in reader:
            yield block
            step = min(total - done, len(block) / reader.sample_rate)
            done += step
            bar.update(step)
        bar.update(total - done)  # resampler rounding: end on the header's length


def detect_file(detector, reader: AudioBlocks, threshold: float | None = None, progress: bool = False) -> list[dict]:
    """Detections ``[{"start", "end", "score"}]`` [s] of a whole file, streamed block by block;
    equal to ``detector.detect(whole_waveform)``. ``progress``: a bar on stderr (:func:`progress_blocks`).

    Raises:
        AudioDecodeError: decoding failed part-way (see :class:`AudioBlocks`).
    """
    stream = detector.stream(threshold)
    out: list[dict] = []
    for block in progress_blocks(reader, progress, f"detect {Path(reader.path).name}"):
        stream.push(block)
        out += stream.pop_completed()
    stream.flush()
    return out + stream.pop_completed()


def transcribe_file(transcriber, reader: AudioBlocks, progress: bool = False) -> str:
    """Transcript of a whole file in overlapping windows (:meth:`Transcriber.transcribe_long`).
    ``progress``: a bar on stderr (:func:`progress_blocks`).

    Raises:
        AudioDecodeError: decoding failed part-way (see :class:`AudioBlocks`).
    """
    return transcriber.transcribe_long(progress_blocks(reader, progress, f"transcribe {Path(reader.path).name}"))
