"""Character and SentencePiece tokenizers: fixed specials, unk, save/load, determinism."""

import doctest
import json
import subprocess
import sys

import pytest

import seqflow.text.tokenizers as tokenizers_module
from seqflow.errors import ConfigError, SeqflowError
from seqflow.text.normalize import normalize_text
from seqflow.text.sentences import generate_sentences
from seqflow.text.tokenizers import (
    BLANK_ID, EOS_ID, SOS_ID, SPECIAL_TOKENS, UNK_ID, CharTokenizer, SentencePieceTokenizer,
    Tokenizer, build_tokenizer, load_tokenizer,
)


@pytest.fixture(scope="module")
def texts():
    return [normalize_text(s) for s in generate_sentences(1500, seed=3)]


@pytest.fixture(scope="module", params=["unigram", "bpe"])
def spm_tok(request, texts, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param)
    return SentencePieceTokenizer.train(texts, 200, request.param, out_dir=out), out


def test_module_docstring_examples_run():
    result = doctest.testmod(tokenizers_module)
    assert result.attempted >= 4 and result.failed == 0


def test_char_vocab_is_specials_then_sorted_characters(texts):
    tok = CharTokenizer.from_texts(texts)
    assert (BLANK_ID, SOS_ID, EOS_ID, UNK_ID) == (0, 1, 2, 3)
    assert tok.tokens[:4] == list(SPECIAL_TOKENS)
    assert tok.tokens[4:] == sorted(set("".join(texts)))
    assert tok.tokens[4:] == sorted(set("abcdefghijklmnopqrstuvwxyz' "))  # the corpus uses all of them
    assert tok.vocab_size == 32 and isinstance(tok, Tokenizer)


def test_char_encode_decode_roundtrip_and_unk(texts):
    tok = CharTokenizer.from_texts(["ab c"])
    assert tok.encode("cab") == [7, 5, 6]
    assert tok.encode("cxb") == [7, UNK_ID, 6]
    assert tok.decode([SOS_ID, 7, BLANK_ID, 5, 6, UNK_ID, EOS_ID, 99]) == "cab"
    full = CharTokenizer.from_texts(texts)
    for t in texts[:200]:
        ids = full.encode(t)
        assert len(ids) == len(t) and min(ids) > UNK_ID
        assert full.decode(ids) == t


def test_char_save_load_roundtrip(tmp_path, texts):
    tok = CharTokenizer.from_texts(texts)
    path = tok.save(tmp_path / "tok")
    assert path.name == "tokenizer.json" and json.loads(path.read_text())["kind"] == "char"
    back = load_tokenizer(tmp_path / "tok")
    assert isinstance(back, CharTokenizer) and back.tokens == tok.tokens
    assert [back.encode(t) for t in texts[:50]] == [tok.encode(t) for t in texts[:50]]


def test_sentencepiece_specials_encode_decode_and_unk(spm_tok, texts):
    tok, _ = spm_tok
    assert tok.tokens[:4] == list(SPECIAL_TOKENS) and 30 < tok.vocab_size <= 200
    assert (tok.blank_id, tok.sos_id, tok.eos_id, tok.unk_id) == (0, 1, 2, 3)
    for t in texts[:300]:
        ids = tok.encode(t)
        assert ids and min(ids) > EOS_ID and max(ids) < tok.vocab_size
        assert tok.decode(ids) == t
    assert len(tok.encode("turn off the lights")) < len("turn off the lights")  # real subwords
    ids = tok.encode("turn é off")
    assert UNK_ID in ids and tok.decode(ids) == "turn off"
    assert tok.decode([SOS_ID, *tok.encode("hello"), EOS_ID, BLANK_ID]) == "hello"


def test_sentencepiece_save_load_roundtrip(spm_tok, texts):
    tok, out = spm_tok
    assert sorted(p.name for p in out.iterdir()) == ["spm.model", "tokenizer.json"]
    back = load_tokenizer(out)
    assert isinstance(back, SentencePieceTokenizer) and back.kind == tok.kind
    assert back.model_proto == tok.model_proto and back.tokens == tok.tokens
    assert [back.encode(t) for t in texts[:100]] == [tok.encode(t) for t in texts[:100]]


@pytest.mark.parametrize("kind", ["unigram", "bpe"])
def test_sentencepiece_training_is_byte_deterministic_across_processes(kind, texts, tmp_path):
    a = SentencePieceTokenizer.train(texts, 150, kind, out_dir=tmp_path / "a")
    b = SentencePieceTokenizer.train(iter(texts), 150, kind)
    assert a.model_proto == b.model_proto
    script = (
        "import sys; from seqflow.text.normalize import normalize_text as n;"
        "from seqflow.text.sentences import generate_sentences as g;"
        "from seqflow.text.tokenizers import SentencePieceTokenizer as S;"
        f"S.train([n(s) for s in g(1500, seed=3)], 150, {kind!r}, out_dir=sys.argv[1])"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "c")], check=True)
    assert (tmp_path / "c" / "spm.model").read_bytes() == (tmp_path / "a" / "spm.model").read_bytes()


def test_build_tokenizer_dispatches_and_saves(tmp_path, texts):
    char = build_tokenizer("char", texts, 999, tmp_path / "char")
    bpe = build_tokenizer("bpe", texts, 120, tmp_path / "bpe")
    assert isinstance(char, CharTokenizer) and isinstance(bpe, SentencePieceTokenizer)
    assert bpe.kind == "bpe" and bpe.vocab_size == 120
    assert load_tokenizer(tmp_path / "char").tokens == char.tokens
    assert load_tokenizer(tmp_path / "bpe").encode(texts[0]) == bpe.encode(texts[0])
    with pytest.raises(ConfigError, match="tokenizer kind"):
        build_tokenizer("wordpiece", texts, 100)
    with pytest.raises(ConfigError, match="vocab_size"):
        build_tokenizer("unigram", texts, 4)


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(SeqflowError, match="no characters"):
        CharTokenizer.from_texts(["", ""])
    with pytest.raises(SeqflowError, match="tokenizer.json"):
        load_tokenizer(tmp_path / "missing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "tokenizer.json").write_text('{"kind": "wordpiece"}')
    with pytest.raises(SeqflowError, match="kind 'wordpiece'"):
        load_tokenizer(tmp_path / "bad")
    (tmp_path / "nospm").mkdir()
    (tmp_path / "nospm" / "tokenizer.json").write_text('{"kind": "bpe", "model_file": "spm.model"}')
    with pytest.raises(SeqflowError, match="spm.model"):
        load_tokenizer(tmp_path / "nospm")
    with pytest.raises(SeqflowError, match="SentencePiece training failed"):
        SentencePieceTokenizer.train([], 50)
