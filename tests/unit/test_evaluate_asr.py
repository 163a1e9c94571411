"""ASR evaluation: exact WER/CER on constructed references and hypotheses, per source, and the table."""

from __future__ import annotations

import csv

import jiwer
import numpy as np
import pytest
from torchmetrics.text import CharErrorRate, WordErrorRate

from seqflow.evaluate.asr import error_counts, evaluate_asr, hypotheses_table

SR = 16000
# (key, reference, hypothesis, source): word edits / char edits worked out by hand
CASES = [
    ("a-1", "turn on the light", "turn on the light", "synthetic"),    # 0 / 0
    ("a-2", "set a timer", "set the timer", "synthetic"),              # 1 sub / a->the: 1 sub + 2 ins = 3
    ("b-1", "hello world", "hello", "librispeech"),                    # 1 del / 6 del (" world")
    ("b-2", "go left", "go left now", "librispeech"),                  # 1 ins / 4 ins (" now")
]


class FakeTranscriber:
    """Returns the constructed hypothesis of each waveform (its length encodes the case index)."""

    sample_rate = SR

    def __init__(self) -> None:
        self.calls: list[int] = []

    def transcribe_batch(self, wavs, batch_size=None):
        self.calls.append(len(wavs))
        return [CASES[len(w) // SR - 1][2] for w in wavs]


def _samples():
    for i, (key, ref, _hyp, src) in enumerate(CASES):
        yield key, np.zeros((i + 1) * SR, np.float32), {"text": ref, "source": src}


def test_error_counts() -> None:
    assert error_counts("kitten", "sitting")["char_edits"] == 3
    assert error_counts("", "a b") == {"word_edits": 2, "words": 0, "char_edits": 3, "chars": 0}
    assert error_counts("set a timer", "set  the timer ") == {"word_edits": 1, "words": 3, "char_edits": 3,
                                                              "chars": 11}


def test_exact_wer_cer_overall_and_per_source() -> None:
    fake = FakeTranscriber()
    metrics, rows = evaluate_asr(fake, _samples(), batch_size=3, progress=False)
    assert fake.calls == [3, 1]
    refs, hyps = [c[1] for c in CASES], [c[2] for c in CASES]
    assert metrics["test/wer"] == pytest.approx(3 / 11)          # 0+1+1+1 edits over 4+3+2+2 words
    assert metrics["test/cer"] == pytest.approx(13 / 46)         # 0+3+6+4 edits over 17+11+11+7 chars (spaces count)
    assert metrics["test/wer"] == pytest.approx(jiwer.wer(refs, hyps))
    assert metrics["test/cer"] == pytest.approx(jiwer.cer(refs, hyps))
    assert metrics["test/wer"] == pytest.approx(float(WordErrorRate()(hyps, refs)))
    assert metrics["test/cer"] == pytest.approx(float(CharErrorRate()(hyps, refs)))
    assert metrics["test/synthetic/wer"] == pytest.approx(1 / 7)
    assert metrics["test/synthetic/cer"] == pytest.approx(3 / 28)
    assert metrics["test/librispeech/wer"] == pytest.approx(2 / 4)
    assert metrics["test/librispeech/cer"] == pytest.approx(10 / 18)
    assert metrics["test/num_utterances"] == 4 and metrics["test/synthetic/num_utterances"] == 2
    assert metrics["test/hours"] == pytest.approx(10 / 3600)
    assert [r["key"] for r in rows] == ["a-1", "a-2", "b-1", "b-2"]
    assert rows[2]["hypothesis"] == "hello" and rows[2]["cer"] == pytest.approx(6 / 11)


def test_hypotheses_table_markdown_and_csv(tmp_path) -> None:
    _, rows = evaluate_asr(FakeTranscriber(), _samples(), progress=False)
    md = hypotheses_table(rows, tmp_path / "hyp.md", n=3)
    lines = md.read_text().splitlines()
    assert lines[0] == "| key | source | cer | reference | hypothesis |" and len(lines) == 2 + 3
    assert "| a-1 | synthetic | 0.000 | turn on the light | turn on the light |" in lines
    path = hypotheses_table(rows, tmp_path / "hyp.csv", n=50)
    with path.open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == 4 and table[2]["reference"] == "hello world" and table[2]["hypothesis"] == "hello"
