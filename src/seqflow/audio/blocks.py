"""Read long audio files block by block: decode (soundfile), down-mix, resample (soxr, streaming).

Memory does not depend on the file's length: one block of the source file, one block of output
and the resampler's filter state are held at a time, so a 2-hour file is read like a 2-second one.

>>> reader = AudioBlocks("meeting.flac", target_sr=16000, block_s=10.0)    # doctest: +SKIP
>>> reader.duration_s                                   # from the header       # doctest: +SKIP
7200.0
>>> for block in reader:                                # (S_i,) float32, 16 kHz  # doctest: +SKIP
...     stream.push(block)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from seqflow.errors import AudioDecodeError


def _reason(exc: Exception) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]


class AudioBlocks:
    """An audio file (WAV, FLAC, OGG, ... anything libsndfile reads) as an iterable of mono float32
    blocks at ``target_sr``.

    The file is opened and its header checked here (so a bad file fails before any work);
    iterating decodes ``block_s`` seconds of the source at a time, averages the channels and
    resamples with a stateful :class:`soxr.ResampleStream` (``HQ``), so the concatenated blocks
    equal a whole-file decode + resample up to the resampler's float rounding (same length:
    ``round(frames * target_sr / source_sr)``). Each iteration re-reads the file from the start.

    Args:
        path: the audio file.
        target_sr: output rate [Hz]; ``None`` keeps the file's rate.
        block_s: seconds of source audio decoded per block (> 0).

    Attributes:
        source_sr: the file's rate [Hz]. channels: its channel count. frames: samples per channel
            in the file (from the header). duration_s: ``frames / source_sr``. sample_rate: the
            output rate.

    Raises:
        AudioDecodeError: reason ``missing`` (no such file), ``unreadable`` (not decodable audio,
        named with libsndfile's reason), ``empty`` (no samples); while iterating also
        ``unreadable`` (decoding failed mid-file) and ``nan_or_inf`` (non-finite samples).
    """

    def __init__(self, path: str | os.PathLike, target_sr: int | None = 16000, block_s: float = 10.0) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise AudioDecodeError(str(self.path), "missing", "no such file")
        if not block_s > 0:
            raise ValueError(f"block_s must be > 0, got {block_s}")
        try:
            info = sf.info(str(self.path))
        except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError / TypeError
            raise AudioDecodeError(str(self.path), "unreadable", _reason(exc)) from exc
        self.source_sr, self.channels, self.frames = int(info.samplerate), int(info.channels), int(info.frames)
        if self.frames <= 0:
            raise AudioDecodeError(str(self.path), "empty", "no samples")
        self.sample_rate = int(target_sr or self.source_sr)
        self.block_frames = max(1, int(round(block_s * self.source_sr)))

    @property
    def duration_s(self) -> float:
        """Length of the file [s] (header)."""
        return self.frames / self.source_sr

    def __iter__(self) -> Iterator[np.ndarray]:
        """Yield ``(S_i,)`` float32 mono blocks at :attr:`sample_rate` (some may be empty while the
        resampler fills its filter)."""
        name = str(self.path)
        stream = None
        if self.sample_rate != self.source_sr:
            stream = soxr.ResampleStream(self.source_sr, self.sample_rate, 1, dtype="float32", quality="HQ")
        got = 0
        try:
            with sf.SoundFile(name) as f:
                while True:
                    data = f.read(self.block_frames, dtype="float32", always_2d=True)
                    if data.shape[0] == 0:
                        break
                    got += data.shape[0]
                    mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
                    if not np.isfinite(mono).all():
                        where = f"non-finite samples near {got / self.source_sr:.1f} s"
                        raise AudioDecodeError(name, "nan_or_inf", where)
                    yield np.ascontiguousarray(mono if stream is None else stream.resample_chunk(mono))
        except AudioDecodeError:
            raise
        except Exception as exc:  # a decode error part-way through the file
            raise AudioDecodeError(name, "unreadable", _reason(exc)) from exc
        if got == 0:
            raise AudioDecodeError(name, "empty", "no samples")
        if stream is not None:
            yield np.ascontiguousarray(stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True))


def read_blocks(path: str | os.PathLike, target_sr: int | None = 16000, block_s: float = 10.0) -> Iterator[np.ndarray]:
    """Shorthand for ``iter(AudioBlocks(path, target_sr, block_s))`` (the header is checked at the
    first ``next``); see :class:`AudioBlocks` for shapes and errors."""
    yield from AudioBlocks(path, target_sr, block_s)
