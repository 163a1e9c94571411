"""Tokenizers for ASR targets: characters (default) and SentencePiece unigram/BPE.

Both share four special ids, fixed for every model:

======  ===========  ============================================================
id      token        use
======  ===========  ============================================================
0       ``<blank>``  CTC blank (Graves et al. 2006) and the padding id of target batches
1       ``<sos>``    start of sequence, first input of the attention decoder
2       ``<eos>``    end of sequence, last target of the attention decoder
3       ``<unk>``    a character the tokenizer has not seen in training
======  ===========  ============================================================

:meth:`~Tokenizer.encode` never emits 0, 1 or 2 (callers add ``<sos>``/``<eos>``);
characters outside the vocabulary become ``unk_id`` (callers decide whether to quarantine the
utterance). :meth:`~Tokenizer.decode` drops all four specials. Tokenizers expect text that
:func:`seqflow.text.normalize.normalize_text` has already normalised; they do not normalise.

A tokenizer is saved to a directory as ``tokenizer.json`` (kind and vocabulary) plus
``spm.model`` for SentencePiece, and is shipped with the model as an artifact.

SentencePiece: T. Kudo and J. Richardson, "SentencePiece: A simple and language independent
subword tokenizer and detokenizer for Neural Text Processing", EMNLP 2018 (demo);
unigram LM: T. Kudo, "Subword Regularization", ACL 2018; BPE: Sennrich et al., ACL 2016.

>>> tok = CharTokenizer.from_texts(["set a timer", "turn it off"])
>>> tok.tokens[:6]
['<blank>', '<sos>', '<eos>', '<unk>', ' ', 'a']
>>> tok.encode("tea!")
[14, 6, 5, 3]
>>> tok.decode([0, 14, 6, 5, 3, 2])
'tea'
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from seqflow.audio.io import write_bytes_atomic
from seqflow.errors import ConfigError, SeqflowError

BLANK_ID, SOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
SPECIAL_TOKENS = ("<blank>", "<sos>", "<eos>", "<unk>")
TOKENIZER_JSON = "tokenizer.json"
SPM_MODEL = "spm.model"
KINDS = ("char", "unigram", "bpe")


@runtime_checkable
class Tokenizer(Protocol):
    """What the models, decoders and metrics need from a tokenizer (ids as in the table above)."""

    vocab_size: int
    tokens: list[str]  # token string of every id, specials first
    blank_id: int
    sos_id: int
    eos_id: int
    unk_id: int

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (U,), never blank/sos/eos; unknown characters → ``unk_id``."""
        ...

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``, special ids skipped."""
        ...

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the tokenizer files into ``directory`` (created); returns ``tokenizer.json``."""
        ...


class _Specials:
    blank_id, sos_id, eos_id, unk_id = BLANK_ID, SOS_ID, EOS_ID, UNK_ID

    @staticmethod
    def _write_json(directory: str | os.PathLike, meta: dict) -> Path:
        path = Path(directory) / TOKENIZER_JSON
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, (json.dumps(meta, indent=1, ensure_ascii=False) + "\n").encode())
        return path


class CharTokenizer(_Specials):
    """One token per character: ``<blank> <sos> <eos> <unk>`` then the characters, sorted.

    Args:
        chars: the characters of the vocabulary (any order, duplicates ignored; single
            characters, none of them a special token).
    """

    kind = "char"

    def __init__(self, chars: Iterable[str]) -> None:
        chars = sorted(set(chars))
        if any(len(c) != 1 for c in chars):
            raise ConfigError(f"CharTokenizer: vocabulary entries must be single characters: {chars}")
        self.tokens: list[str] = list(SPECIAL_TOKENS) + chars
        self._ids = {c: i for i, c in enumerate(self.tokens) if i >= len(SPECIAL_TOKENS)}
        self.vocab_size = len(self.tokens)

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> CharTokenizer:
        """Vocabulary = every character in ``texts`` (the normalised train transcripts)."""
        chars: set[str] = set()
        for t in texts:
            chars.update(t)
        if not chars:
            raise SeqflowError("CharTokenizer.from_texts: no characters in the training texts")
        return cls(chars)

    def encode(self, text: str) -> list[int]:
        """Ids of the characters of ``text`` (U = len(text)); unseen characters → ``unk_id``."""
        return [self._ids.get(c, UNK_ID) for c in text]

    def decode(self, ids: Iterable[int]) -> str:
        """Characters of ``ids`` with specials (and out-of-range ids) dropped, whitespace collapsed."""
        n = len(SPECIAL_TOKENS)
        return " ".join("".join(self.tokens[i] for i in map(int, ids) if n <= i < self.vocab_size).split())

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``tokenizer.json`` with the token list."""
        return self._write_json(directory, {"kind": self.kind, "vocab_size": self.vocab_size,
                                            "tokens": self.tokens})

    @classmethod
    def load(cls, directory: str | os.PathLike) -> CharTokenizer:
        """Read a tokenizer written by :meth:`save`."""
        meta = _read_meta(directory, cls.kind)
        if tuple(meta["tokens"][:len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise SeqflowError(f"{Path(directory) / TOKENIZER_JSON}: special tokens are not {SPECIAL_TOKENS}")
        return cls(meta["tokens"][len(SPECIAL_TOKENS):])


class SentencePieceTokenizer(_Specials):
    """A SentencePiece model (unigram or BPE) with our specials at ids 0–3.

    Args:
        model_proto: the serialized SentencePiece model (contents of ``spm.model``).
        model_type: ``"unigram"`` or ``"bpe"`` (recorded in ``tokenizer.json``).
    """

    def __init__(self, model_proto: bytes, model_type: str) -> None:
        import sentencepiece as spm

        self.model_proto, self.kind = bytes(model_proto), model_type
        self.sp = spm.SentencePieceProcessor(model_proto=self.model_proto)
        self.vocab_size = int(self.sp.get_piece_size())
        self.tokens = [self.sp.id_to_piece(i) for i in range(self.vocab_size)]
        if tuple(self.tokens[:len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise SeqflowError(f"SentencePiece model: ids 0-3 are {self.tokens[:4]}, not {SPECIAL_TOKENS}")

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, model_type: str = "unigram",
              out_dir: str | os.PathLike | None = None, seed: int = 0) -> SentencePieceTokenizer:
        """Train on ``texts`` (normalised train transcripts, streamed from memory).

        Deterministic: one thread, no sentence sampling or shuffling, fixed random seed; the
        same texts and arguments give a byte-identical ``spm.model``. ``vocab_size`` includes
        the four specials and is a soft upper bound (a small corpus may yield fewer pieces).

        Raises:
            ConfigError: unknown ``model_type`` or ``vocab_size`` < 8.
            SeqflowError: SentencePiece could not train (e.g. no texts).
        """
        import sentencepiece as spm

        if model_type not in ("unigram", "bpe"):
            raise ConfigError(f"SentencePiece model_type must be 'unigram' or 'bpe', got {model_type!r}")
        if vocab_size < 8:
            raise ConfigError(f"SentencePiece vocab_size must be >= 8, got {vocab_size}")
        spm.set_random_generator_seed(seed)
        buf = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(list(texts)), model_writer=buf, vocab_size=int(vocab_size),
                model_type=model_type, character_coverage=1.0, hard_vocab_limit=False,
                pad_id=BLANK_ID, bos_id=SOS_ID, eos_id=EOS_ID, unk_id=UNK_ID,
                pad_piece=SPECIAL_TOKENS[0], bos_piece=SPECIAL_TOKENS[1],
                eos_piece=SPECIAL_TOKENS[2], unk_piece=SPECIAL_TOKENS[3],
                normalization_rule_name="identity", num_threads=1, input_sentence_size=0,
                shuffle_input_sentence=False, minloglevel=2)
        except RuntimeError as e:
            raise SeqflowError(f"SentencePiece training failed: {e}") from e
        tok = cls(buf.getvalue(), model_type)
        if out_dir is not None:
            tok.save(out_dir)
        return tok

    def encode(self, text: str) -> list[int]:
        """Piece ids of ``text`` (U,); pieces for unseen characters → ``unk_id``."""
        return list(self.sp.encode(text, out_type=int))

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids`` with specials (and out-of-range ids) dropped."""
        keep = [i for i in map(int, ids) if len(SPECIAL_TOKENS) <= i < self.vocab_size]
        return " ".join(self.sp.decode(keep).split())

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``spm.model`` and ``tokenizer.json``."""
        Path(directory).mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(Path(directory) / SPM_MODEL, self.model_proto)
        return self._write_json(directory, {"kind": self.kind, "vocab_size": self.vocab_size,
                                            "model_file": SPM_MODEL, "tokens": self.tokens})

    @classmethod
    def load(cls, directory: str | os.PathLike) -> SentencePieceTokenizer:
        """Read a tokenizer written by :meth:`save`."""
        meta = _read_meta(directory, None)
        path = Path(directory) / meta.get("model_file", SPM_MODEL)
        try:
            proto = path.read_bytes()
        except OSError as e:
            raise SeqflowError(f"{path}: cannot read SentencePiece model ({e})") from e
        return cls(proto, meta["kind"])


def _read_meta(directory: str | os.PathLike, kind: str | None) -> dict:
    path = Path(directory) / TOKENIZER_JSON
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise SeqflowError(f"{path}: cannot read tokenizer ({e})") from e
    if meta.get("kind") not in KINDS or (kind is not None and meta["kind"] != kind):
        raise SeqflowError(f"{path}: tokenizer kind {meta.get('kind')!r} is not {kind or KINDS}")
    return meta


def build_tokenizer(kind: str, texts: Sequence[str], vocab_size: int = 256,
                    out_dir: str | os.PathLike | None = None, seed: int = 0) -> Tokenizer:
    """Train a tokenizer of ``kind`` (``char`` | ``unigram`` | ``bpe``) on ``texts``.

    ``vocab_size`` is ignored for ``char``. When ``out_dir`` is given the tokenizer is saved there.

    Raises:
        ConfigError: unknown ``kind``.
    """
    if kind == "char":
        tok: Tokenizer = CharTokenizer.from_texts(texts)
        if out_dir is not None:
            tok.save(out_dir)
        return tok
    if kind in ("unigram", "bpe"):
        return SentencePieceTokenizer.train(texts, vocab_size, kind, out_dir, seed=seed)
    raise ConfigError(f"tokenizer kind must be one of {KINDS}, got {kind!r}")


def load_tokenizer(directory: str | os.PathLike) -> Tokenizer:
    """Load whichever tokenizer :meth:`save` wrote into ``directory``.

    Raises:
        SeqflowError: ``tokenizer.json`` (or ``spm.model``) missing, unreadable or of unknown kind.
    """
    meta = _read_meta(directory, None)
    if meta["kind"] == "char":
        return CharTokenizer.load(directory)
    return SentencePieceTokenizer.load(directory)
