"""Speech to text with a trained CTC or Transformer recognizer, and its files on disk.

Decoding (``cfg.model.decoding``):

* CTC: ``beam_size <= 1`` → best path (greedy, batched); otherwise CTC prefix beam search
  (Hannun et al. 2014) over the ``token_prune`` most probable tokens per frame.
* Transformer: ``beam_size <= 1`` → greedy attention decoding (batched); otherwise attention beam
  search with length normalisation ``((5 + |Y|) / 6) ** length_penalty`` (Wu et al. 2016) and,
  with ``ctc_rescoring`` λ > 0, joint scores ``(1 - λ) log p_att + λ log p_ctc`` from the CTC head
  (Watanabe et al. 2017). ``max_len`` caps the output tokens (default: the encoder frames T').

A saved transcriber is a folder: ``weights.pt`` (the net's ``state_dict``), ``transcriber.json``
(model kind, front end, net sizes, vocab size, decoding) and ``tokenizer/``.

>>> t = load_transcriber("work/transcriber")                               # doctest: +SKIP
>>> t.transcribe(wav)                          # (S,) float32 at 16 kHz     # doctest: +SKIP
'turn off the kitchen lights'
"""

from __future__ import annotations

import inspect
import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from seqflow.audio.frontend import SpeechFrontend
from seqflow.errors import ConfigError, SeqflowError
from seqflow.models.asr_transformer import TransformerASR
from seqflow.models.ctc import CTCModel
from seqflow.models.decoding import (attention_beam_search, attention_greedy_decode, ctc_greedy_decode,
                                     ctc_prefix_beam_search)
from seqflow.text.tokenizers import Tokenizer, load_tokenizer

WEIGHTS_NAME = "weights.pt"
CONFIG_NAME = "transcriber.json"
TOKENIZER_DIR = "tokenizer"
NETS = {"ctc": CTCModel, "transformer": TransformerASR}
DECODING_DEFAULTS = {"beam_size": 1, "ctc_rescoring": 0.0, "length_penalty": 0.6, "max_len": None,
                     "token_prune": 16, "batch_size": 16, "window_s": 20.0, "overlap_s": 4.0}
MIN_FRAMES = 7  # the 4x conv subsampling needs at least 7 log-mel frames


def model_kind(net: nn.Module) -> str:
    """``"ctc"`` or ``"transformer"`` for a recognizer ``net``; ConfigError otherwise."""
    for kind, cls in NETS.items():
        if isinstance(net, cls):
            return kind
    raise ConfigError(f"{type(net).__name__} is not a speech recognizer ({', '.join(NETS)})")


class Transcriber:
    """Transcribes mono waveforms at the front end's sample rate (16 kHz) to normalised text.

    Args:
        net: a :class:`CTCModel` or :class:`TransformerASR` (put in eval mode here).
        frontend: the :class:`SpeechFrontend` it was trained with. tokenizer: its tokenizer.
        decoding: ``beam_size``, ``ctc_rescoring``, ``length_penalty``, ``max_len``, ``token_prune``,
            ``batch_size``, ``window_s`` / ``overlap_s`` (long audio, :meth:`transcribe_long`)
            (defaults :data:`DECODING_DEFAULTS`; unknown keys ignored).

    Raises:
        ConfigError: vocab or mel-bin mismatch, or ``ctc_rescoring > 0`` for a transformer without CTC head.
    """

    def __init__(self, net: nn.Module, frontend: SpeechFrontend, tokenizer: Tokenizer,
                 decoding: Mapping[str, Any] | None = None) -> None:
        self.kind = model_kind(net)
        self.net, self.frontend, self.tokenizer = net.eval(), frontend.eval(), tokenizer
        if int(tokenizer.vocab_size) != int(net.vocab_size) or frontend.n_mels != net.n_mels:
            raise ConfigError(f"transcriber parts disagree: tokenizer V={tokenizer.vocab_size}, net V={net.vocab_size}, "
                              f"front end F={frontend.n_mels}, net F={net.n_mels}")
        dec = dict(DECODING_DEFAULTS)
        dec.update({k: v for k, v in (decoding or {}).items() if k in DECODING_DEFAULTS and v is not None})
        self.decoding = dec
        if self.kind == "transformer" and dec["ctc_rescoring"] > 0 and net.ctc_head is None:
            raise ConfigError("decoding.ctc_rescoring > 0 needs a transformer trained with net.ctc_weight > 0")

    @property
    def sample_rate(self) -> int:
        return self.frontend.sample_rate

    def transcribe(self, wav: np.ndarray) -> str:
        """Text of one waveform ``(S,)`` float32 (``""`` for empty audio), in one pass: memory grows
        with its length (attention is quadratic); use :meth:`transcribe_long` for long audio."""
        return self.transcribe_batch([wav])[0]

    def transcribe_long(self, audio) -> str:
        """Text of audio of any length in bounded memory: ``decoding.window_s`` windows overlapping by
        ``decoding.overlap_s``, joined (:func:`seqflow.serve.long_form.transcribe_long`); equal to
        :meth:`transcribe` for audio within one window.

        Args: ``audio``: one ``(S,)`` float32 waveform or an iterable of ``(S_i,)`` blocks at 16 kHz.
        Raises: ValueError: a block is not 1-D or holds NaN/Inf.
        """
        from seqflow.serve.long_form import transcribe_long

        return transcribe_long(self, audio, float(self.decoding["window_s"]), float(self.decoding["overlap_s"]))

    def transcribe_any(self, wavs: Sequence[np.ndarray]) -> list[str]:
        """Texts of several waveforms: those within one window batched (:meth:`transcribe_batch`),
        longer ones windowed (:meth:`transcribe_long`), so compute memory stays bounded."""
        limit = int(float(self.decoding["window_s"]) * self.sample_rate)
        out = [""] * len(wavs)
        short = [i for i, w in enumerate(wavs) if np.size(w) <= limit]
        for i, text in zip(short, self.transcribe_batch([wavs[i] for i in short])):
            out[i] = text
        for i in (i for i in range(len(wavs)) if np.size(wavs[i]) > limit):
            x = np.asarray(wavs[i], dtype=np.float32)
            out[i] = self.transcribe_long(x if x.ndim == 1 else _not_mono(x))
        return out

    @torch.no_grad()
    def transcribe_batch(self, wavs: Sequence[np.ndarray], batch_size: int | None = None) -> list[str]:
        """Texts of several waveforms, in input order. They run in length-sorted batches of
        ``batch_size`` (default ``decoding.batch_size``); features are computed per waveform, so a
        waveform's transcript does not depend on its batch-mates.

        Raises:
            ValueError: a waveform is not 1-D or holds NaN/Inf.
        """
        xs = [np.asarray(w, dtype=np.float32).reshape(-1) if np.ndim(w) <= 1 else _not_mono(w) for w in wavs]
        for x in xs:
            if not np.all(np.isfinite(x)):
                raise ValueError("waveform contains NaN or Inf samples")
        bs = max(1, int(batch_size or self.decoding["batch_size"]))
        out = [""] * len(xs)
        order = [i for i in sorted(range(len(xs)), key=lambda i: len(xs[i])) if len(xs[i]) > 0]
        min_samples = (MIN_FRAMES - 1) * self.frontend.hop_length
        for b0 in range(0, len(order), bs):
            idx = order[b0:b0 + bs]
            batch = [np.pad(xs[i], (0, max(0, min_samples - len(xs[i])))) for i in idx]
            feats, lengths = self.frontend.features_each(batch)
            for i, ids in zip(idx, self._decode(feats, lengths)):
                out[i] = self.tokenizer.decode(ids)
        return out

    def _decode(self, feats: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
        d, tok = self.decoding, self.tokenizer
        beam, max_len = int(d["beam_size"]), d["max_len"]
        if self.kind == "ctc":
            log_probs, n = self.net(feats, lengths)
            if beam <= 1:
                return ctc_greedy_decode(log_probs, n, blank=tok.blank_id)
            return [ctc_prefix_beam_search(log_probs[b, :int(n[b])], beam, blank=tok.blank_id,
                                           token_prune=d["token_prune"])[0][0] for b in range(len(n))]
        if beam <= 1:
            return attention_greedy_decode(self.net, feats, lengths, tok.sos_id, tok.eos_id,
                                           max_len=max_len, blank=tok.blank_id)
        return [attention_beam_search(self.net, feats[b:b + 1, :int(lengths[b])], lengths[b:b + 1], tok.sos_id,
                                      tok.eos_id, beam_size=beam, max_len=max_len, alpha=float(d["length_penalty"]),
                                      ctc_weight=float(d["ctc_rescoring"]), blank=tok.blank_id)
                for b in range(len(lengths))]


def _not_mono(w: Any) -> np.ndarray:
    raise ValueError(f"expected a mono waveform of shape (S,), got shape {np.shape(w)}")


def _net_kwargs(kind: str, net_cfg: Mapping[str, Any]) -> dict:
    params = inspect.signature(NETS[kind].__init__).parameters
    return {k: v for k, v in net_cfg.items() if k in params and k not in ("self", "n_mels", "vocab_size")}


def save_transcriber(directory: str | Path, net: nn.Module, model_cfg: Mapping[str, Any],
                     tokenizer_dir: str | Path, decoding: Mapping[str, Any] | None = None) -> Path:
    """Write ``weights.pt``, ``transcriber.json`` and ``tokenizer/`` (a copy of ``tokenizer_dir``)
    into ``directory``; returns the directory.

    ``model_cfg`` is ``cfg.model`` as a plain dict (``features``, ``net``, optional ``decoding``;
    ``decoding`` overrides its ``decoding``).

    Raises:
        ConfigError: not a recognizer, or the tokenizer's vocab size differs from the net's.
        SeqflowError: ``tokenizer_dir`` is not a saved tokenizer.
    """
    kind = model_kind(net)
    tokenizer = load_tokenizer(tokenizer_dir)
    if int(tokenizer.vocab_size) != int(net.vocab_size):
        raise ConfigError(f"{tokenizer_dir}: tokenizer has {tokenizer.vocab_size} tokens, the net {net.vocab_size}")
    frontend = SpeechFrontend.from_config(model_cfg.get("features", {}))
    if frontend.n_mels != net.n_mels:
        raise ConfigError(f"model.features.n_mels={frontend.n_mels} but the net takes {net.n_mels}")
    dec = {k: v for k, v in dict(model_cfg.get("decoding") or {}).items() if k in DECODING_DEFAULTS}
    dec.update({k: v for k, v in dict(decoding or {}).items() if k in DECODING_DEFAULTS})
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    meta = {"format": 1, "model": kind, "features": frontend.config(), "vocab_size": int(net.vocab_size),
            "net": _net_kwargs(kind, dict(model_cfg.get("net", {}))), "decoding": dec}
    if kind == "transformer":
        meta["net"]["ctc_weight"] = float(net.ctc_weight)
    torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, d / WEIGHTS_NAME)
    if (d / TOKENIZER_DIR).exists():
        shutil.rmtree(d / TOKENIZER_DIR)
    tokenizer.save(d / TOKENIZER_DIR)
    tmp = d / (CONFIG_NAME + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    tmp.replace(d / CONFIG_NAME)
    return d


def load_transcriber(directory: str | Path, decoding: Mapping[str, Any] | None = None) -> Transcriber:
    """Rebuild a :class:`Transcriber` from :func:`save_transcriber`'s files (CPU tensors).

    ``decoding`` overrides the saved decoding settings key by key.

    Raises:
        SeqflowError: a file missing or unreadable (names it). ConfigError: not a transcriber config.
    """
    d = Path(directory)
    cfg_path, w_path = d / CONFIG_NAME, d / WEIGHTS_NAME
    for p in (cfg_path, w_path, d / TOKENIZER_DIR):
        if not p.exists():
            raise SeqflowError(f"{p}: missing (not a saved transcriber)")
    try:
        meta = json.loads(cfg_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SeqflowError(f"{cfg_path}: unreadable ({exc})") from exc
    kind = meta.get("model")
    if kind not in NETS or not {"features", "net", "vocab_size"} <= set(meta):
        raise ConfigError(f"{cfg_path}: not a transcriber config (model {kind!r})")
    frontend = SpeechFrontend.from_config(meta["features"])
    net = NETS[kind](frontend.n_mels, int(meta["vocab_size"]), **meta["net"])
    try:
        net.load_state_dict(torch.load(w_path, map_location="cpu", weights_only=True))
    except Exception as exc:  # torch raises several types for a corrupt or mismatched file
        raise SeqflowError(f"{w_path}: cannot load weights ({exc})") from exc
    dec = dict(meta.get("decoding") or {})
    dec.update(dict(decoding or {}))
    return Transcriber(net, frontend, load_tokenizer(d / TOKENIZER_DIR), dec)
