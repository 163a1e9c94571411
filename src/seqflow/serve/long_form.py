"""Long-form transcription in bounded memory: fixed windows with overlap, transcribed and joined.

Audio of any length (an iterable of 16 kHz blocks, e.g. :class:`seqflow.audio.blocks.AudioBlocks`,
or one array) is cut into windows of ``window_s`` seconds (default 20 s) starting every
``window_s - overlap_s`` seconds (default overlap 4 s; starts are whole CTC output frames,
40 ms), transcribed a few windows at a time, and joined. Only ``batch_windows`` windows of audio
and the pending window's outputs are held, never the whole file; audio no longer than one window
is transcribed exactly as :meth:`Transcriber.transcribe` does.

Joins:

* **CTC** (frame timing): the two windows' output frames are aligned in absolute time. The cut is
  the frame nearest the middle of the overlap (within its middle half) where *both* windows'
  best path is blank, so no emitted token straddles it; without such a frame, the middle. The
  left window contributes its frames before the cut, the right one its frames from the cut on:
  with greedy decoding the frame paths are concatenated and collapsed as one path; with beam
  search each window's span is beam-searched and the token ids concatenated.
* **Transformer** (no frame timing): word-level overlap merge. The left window's last words and
  the right window's first words (those that may fall in the overlap) are aligned with
  :class:`difflib.SequenceMatcher`; the longest common run of words is spoken once and the join
  is made in its middle. Without a common word, each window keeps the words whose estimated time
  (uniform over the window) falls on its side of the overlap's middle.

>>> text = transcribe_long(transcriber, AudioBlocks("talk.flac"))          # doctest: +SKIP
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch

from seqflow.models.decoding import ctc_prefix_beam_search

WINDOW_S = 20.0
OVERLAP_S = 4.0
BATCH_WINDOWS = 4
SUBSAMPLING = 4  # log-mel frames per encoder output frame (ConvSubsampling4x)


def windows(blocks: Iterable[np.ndarray], window: int, hop: int) -> Iterator[tuple[int, np.ndarray]]:
    """Overlapping windows of a block stream.

    Args:
        blocks: ``(S_i,)`` float32 pieces of one stream (any sizes, empty ones allowed).
        window: samples per window (> 0). hop: samples between window starts (``0 < hop <= window``).

    Yields: ``(start_sample, wav (<= window,))``: every window is full-length except the last,
    which ends with the stream; together they cover it (nothing for an empty stream).
    """
    if not 0 < hop <= window:
        raise ValueError(f"need 0 < hop <= window, got hop={hop}, window={window}")
    buf, start, yielded_end = np.zeros(0, dtype=np.float32), 0, 0
    for block in blocks:
        b = np.asarray(block, dtype=np.float32)
        if b.ndim != 1:
            raise ValueError(f"expected mono blocks of shape (S,), got shape {b.shape}")
        buf = np.concatenate([buf, b]) if buf.size else b.copy()
        while buf.size >= window:
            yield start, buf[:window].copy()
            yielded_end = start + window
            buf, start = buf[hop:], start + hop
    if start + buf.size > yielded_end and buf.size:
        yield start, buf.copy()


class _CTCJoiner:
    """Joins consecutive windows' CTC log-probabilities at blank frames (module doc)."""

    def __init__(self, blank: int, beam_size: int, token_prune: int) -> None:
        self.blank, self.beam, self.prune = blank, int(beam_size), int(token_prune)
        self.pending: tuple[int, torch.Tensor, int] | None = None  # (first frame, log_probs (T', V), from frame)
        self.ids: list[int] = []
        self.prev = blank  # greedy collapse state across spans

    def add(self, f0: int, log_probs: torch.Tensor) -> None:
        if self.pending is None:
            self.pending = (f0, log_probs, f0)
            return
        pf, plp, pfrom = self.pending
        cut = self._cut(pf, plp, f0, log_probs)
        self._emit(plp[pfrom - pf:cut - pf])
        self.pending = (f0, log_probs, cut)

    def finish(self) -> list[int]:
        if self.pending is not None:
            pf, plp, pfrom = self.pending
            self._emit(plp[pfrom - pf:])
            self.pending = None
        return self.ids

    def _cut(self, pf: int, plp: torch.Tensor, f0: int, lp: torch.Tensor) -> int:
        lo, hi = f0, min(pf + plp.shape[0], f0 + lp.shape[0])
        if hi <= lo:
            return max(lo, pf)
        mid, quarter = (lo + hi) // 2, (hi - lo) // 4
        a, b = mid - quarter, mid + quarter + 1
        both_blank = (plp[a - pf:b - pf].argmax(-1) == self.blank) & (lp[a - f0:b - f0].argmax(-1) == self.blank)
        idx = torch.nonzero(both_blank).reshape(-1)
        if idx.numel() == 0:
            return mid
        frames = idx + a
        return int(frames[(frames - mid).abs().argmin()])

    def _emit(self, span: torch.Tensor) -> None:
        if span.shape[0] == 0:
            return
        if self.beam > 1:
            self.ids += list(ctc_prefix_beam_search(span, self.beam, blank=self.blank, token_prune=self.prune)[0][0])
            return
        for t in span.argmax(-1).tolist():
            if t != self.prev and t != self.blank:
                self.ids.append(t)
            self.prev = t


def merge_words(left: Sequence[str], right: Sequence[str], overlap_frac_left: float, overlap_frac_right: float
                ) -> list[str]:
    """Join two overlapping windows' words (the transformer join of the module doc).

    Args:
        left, right: the words of the earlier and the later window.
        overlap_frac_left: fraction of the left window's duration that is overlap (at its end).
        overlap_frac_right: fraction of the right window's duration that is overlap (at its start).

    Returns: the joined words (the overlap's words once).
    """
    n_l = min(len(left), int(math.ceil(len(left) * overlap_frac_left * 1.5)) + 2)
    n_r = min(len(right), int(math.ceil(len(right) * overlap_frac_right * 1.5)) + 2)
    tail, head = list(left[len(left) - n_l:]), list(right[:n_r])
    m = difflib.SequenceMatcher(None, tail, head, autojunk=False).find_longest_match(0, len(tail), 0, len(head))
    if m.size > 0:
        h = m.size // 2
        return list(left[:len(left) - n_l + m.a + h]) + list(right[m.b + h:])
    # no common word: split at the overlap's middle, word times estimated uniformly over each window
    keep_l = [w for j, w in enumerate(left) if (j + 0.5) / len(left) < 1.0 - overlap_frac_left / 2]
    keep_r = [w for j, w in enumerate(right) if (j + 0.5) / len(right) >= overlap_frac_right / 2]
    return keep_l + keep_r


def _window_sizes(transcriber, window_s: float, overlap_s: float) -> tuple[int, int, int]:
    frame = transcriber.frontend.hop_length * SUBSAMPLING  # samples per encoder output frame
    window = max(frame, int(round(window_s * transcriber.sample_rate / frame)) * frame)
    hop = int(round((window_s - overlap_s) * transcriber.sample_rate / frame)) * frame
    if not 0 < hop < window:
        raise ValueError(f"need 0 <= overlap_s < window_s, got window_s={window_s}, overlap_s={overlap_s}")
    return window, hop, frame


@torch.no_grad()
def transcribe_long(transcriber, audio: Iterable[np.ndarray] | np.ndarray, window_s: float = WINDOW_S,
                    overlap_s: float = OVERLAP_S, batch_windows: int = BATCH_WINDOWS) -> str:
    """Transcribe audio of any length in bounded memory (windows, overlap, join: module doc).

    Args:
        transcriber: a :class:`seqflow.serve.transcriber.Transcriber` (CTC or Transformer).
        audio: mono float32 samples at ``transcriber.sample_rate``: an iterable of ``(S_i,)``
            blocks (consumed once) or one ``(S,)`` array.
        window_s: window length [s]. overlap_s: overlap of consecutive windows [s] (< window_s).
        batch_windows: windows transcribed together (memory: that many windows of audio).

    Returns: the normalised transcript (``""`` for empty audio).

    Raises:
        ValueError: bad window settings, a block that is not 1-D, or NaN/Inf samples.
    """
    window, hop, frame = _window_sizes(transcriber, window_s, overlap_s)
    if isinstance(audio, np.ndarray):
        audio = [audio]
    batch: list[tuple[int, np.ndarray]] = []
    tok = transcriber.tokenizer
    ctc = _CTCJoiner(tok.blank_id, transcriber.decoding["beam_size"], transcriber.decoding["token_prune"])
    words: list[str] = []
    prev_dur = 0.0
    first = True

    def run(batch: list[tuple[int, np.ndarray]]) -> None:
        nonlocal words, prev_dur, first
        if transcriber.kind == "ctc":
            for (start, _), lp in zip(batch, _ctc_log_probs(transcriber, [w for _, w in batch])):
                ctc.add(start // frame, lp)
            return
        for (start, wav), text in zip(batch, transcriber.transcribe_batch([w for _, w in batch])):
            dur = len(wav) / transcriber.sample_rate
            if first:
                words, first = text.split(), False
            else:
                ov = max(0.0, prev_dur - hop / transcriber.sample_rate)
                words = merge_words(words, text.split(), ov / max(prev_dur, 1e-9), ov / max(dur, 1e-9))
            prev_dur = dur

    n_windows = 0
    for item in windows(audio, window, hop):
        if not np.all(np.isfinite(item[1])):
            raise ValueError("waveform contains NaN or Inf samples")
        if len(batch) >= max(1, batch_windows):  # run a full batch once a later window exists
            run(batch)
            batch = []
        batch.append(item)
        n_windows += 1
    if n_windows == 0:
        return ""
    if n_windows == 1:  # audio within one window: exactly the short-audio path
        return transcriber.transcribe(batch[0][1])
    run(batch)
    if transcriber.kind == "ctc":
        return tok.decode(ctc.finish())
    return " ".join(words)


def _ctc_log_probs(transcriber, wavs: list[np.ndarray]) -> list[torch.Tensor]:
    """``(T'_i, V)`` CTC log-probabilities of each window (features computed per window)."""
    from seqflow.serve.transcriber import MIN_FRAMES

    min_samples = (MIN_FRAMES - 1) * transcriber.frontend.hop_length
    padded = [np.pad(w, (0, max(0, min_samples - len(w)))) for w in wavs]
    feats, lengths = transcriber.frontend.features_each(padded)
    log_probs, n = transcriber.net(feats, lengths)
    return [log_probs[b, :int(n[b])] for b in range(len(wavs))]
