"""validate stage: one real audio file per bad kind is quarantined with the right reason, nothing is deleted."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from seqflow.data import validate as validate_mod
from seqflow.data.manifest import Utterance, read_jsonl, read_manifest, write_jsonl, write_manifest
from seqflow.data.validate import (
    VALID_MANIFEST_NAME,
    check_audio,
    check_header,
    check_transcript,
    normalize_transcript,
    validate_corpus,
)
from seqflow.errors import DataValidationError

SR = 16000
LIMITS = dict(min_duration=0.05, max_duration=5.0, sample_rate=SR)


def _speech(seconds: float, seed: int = 0) -> np.ndarray:
    """A voiced-looking signal: harmonics under an envelope plus a little noise, peak ~0.5."""
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    x = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((180, 360, 540, 900), start=1))
    x = x * np.hanning(t.size) + 0.01 * rng.standard_normal(t.size)
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


def _flac(root, rel, wav, sr=SR):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wav, sr, format="FLAC", subtype="PCM_16")
    return rel


# (audio_filepath, kind, text, expected reason or None); files are written by the `corpus` fixture
CASES = [
    ("audio/train/positive/ok1.flac", "positive", "activate", None),
    ("audio/train/negative/ok2.flac", "negative", "hello there", None),
    ("audio/val/positive/ok3.flac", "positive", "activate", None),
    ("background/user/room.wav", "background", "", None),
    ("audio/train/positive/corrupt.flac", "positive", "activate", "unreadable"),
    ("audio/train/positive/zero.flac", "positive", "activate", "empty"),
    ("audio/train/positive/nan.wav", "positive", "activate", "nan_or_inf"),
    ("audio/train/positive/silence.flac", "positive", "activate", "silent"),
    ("audio/train/negative/clipped.flac", "negative", "hello", "clipped"),
    ("audio/train/negative/three.wav", "negative", "hello", "channels"),
    ("audio/train/negative/short.flac", "negative", "hi", "too_short"),
    ("audio/train/negative/long.flac", "negative", "a long one", "too_long"),
    ("audio/train/negative/notext.flac", "negative", "  ", "empty_transcript"),
    ("audio/train/positive/gone.flac", "positive", "activate", "missing"),
    ("audio/train/utterance/ok4.flac", "utterance", "Wake me at 7am, please!", None),
    ("audio/train/utterance/snow.flac", "utterance", "naïve ☃ test", "unnormalisable_text"),
    ("audio/train/utterance/dots.flac", "utterance", "?! ...", "empty_text"),
]
N_VALID = sum(1 for *_, reason in CASES if reason is None)


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "data"
    _flac(root, CASES[0][0], _speech(0.8, 1))
    _flac(root, CASES[1][0], _speech(1.2, 2))
    _flac(root, CASES[2][0], _speech(0.9, 3))
    (root / "background/user").mkdir(parents=True)
    rng = np.random.default_rng(4)
    sf.write(root / CASES[3][0], 0.05 * rng.standard_normal((22050 * 7, 2)), 22050, subtype="PCM_16")  # stereo 7 s
    (root / CASES[4][0]).write_bytes(b"fLaC" + rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    (root / CASES[5][0]).write_bytes(b"")
    nan = _speech(0.5)
    nan[100:110] = np.nan
    sf.write(root / CASES[6][0], nan, SR, subtype="FLOAT")
    _flac(root, CASES[7][0], np.zeros(SR, np.float32))
    _flac(root, CASES[8][0], np.clip(4 * _speech(1.0), -1, 1))
    sf.write(root / CASES[9][0], np.stack([_speech(1.0)] * 3, axis=1), SR, subtype="PCM_16")
    _flac(root, CASES[10][0], _speech(0.02))
    _flac(root, CASES[11][0], _speech(6.0))
    _flac(root, CASES[12][0], _speech(0.7))
    for i in (14, 15, 16):  # good audio; only the transcripts differ
        _flac(root, CASES[i][0], _speech(1.1, i))
    utts = [Utterance(p, 1.0 if kind != "background" else 0.0, text, "en-us+f3", p.split("/")[1]
                      if p.startswith("audio/") else "train", kind) for p, kind, text, _ in CASES]
    write_manifest(root / "manifest.jsonl", utts)
    return root


@pytest.mark.parametrize("header_bytes", [0, validate_mod.HEADER_CHECK_BYTES], ids=["header-first", "decode-only"])
def test_each_bad_file_is_quarantined_with_its_reason(corpus, monkeypatch, header_bytes):
    monkeypatch.setattr(validate_mod, "HEADER_CHECK_BYTES", header_bytes)
    manifest_before = (corpus / "manifest.jsonl").read_bytes()
    report = validate_corpus(corpus, max_bad_fraction=1.0, progress=False, **LIMITS)

    rows = read_jsonl(corpus / "quarantine.jsonl")
    got = {r["audio_filepath"]: r["reason"] for r in rows}
    want = {p: reason for p, _, _, reason in CASES if reason}
    assert got == want
    assert all(r["stage"] == "validate" and set(r) == {"audio_filepath", "reason", "detail", "stage"} for r in rows)
    assert report.total == len(CASES) and report.quarantined == len(want) and report.valid == N_VALID == 5
    assert report.reasons == {r: 1 for r in sorted(want.values())}
    assert report.bad_fraction == pytest.approx(len(want) / len(CASES))

    valid = read_manifest(corpus / VALID_MANIFEST_NAME)
    assert [u.audio_filepath for u in valid] == [p for p, _, _, reason in CASES if reason is None]
    durations = {u.audio_filepath: u.duration for u in valid}
    assert durations["audio/train/positive/ok1.flac"] == pytest.approx(0.8)
    assert durations["background/user/room.wav"] == pytest.approx(7.0)  # corrected from 0.0; no max for backgrounds
    assert report.seconds["train/background"] == pytest.approx(7.0)
    assert report.seconds["train/positive"] == pytest.approx(0.8)
    assert report.seconds["train/utterance"] == pytest.approx(1.1)

    # utterances: normalised transcript in text, the original kept; other kinds untouched
    texts = {u.audio_filepath: (u.text, u.extra) for u in valid}
    assert texts["audio/train/utterance/ok4.flac"] == ("wake me at seven a m please",
                                                       {"raw_text": "Wake me at 7am, please!"})
    assert texts["audio/train/negative/ok2.flac"] == ("hello there", {})
    detail = {r["audio_filepath"]: r["detail"] for r in rows}
    assert detail["audio/train/utterance/snow.flac"] == "characters '☃' in 'naïve ☃ test'"  # ï folds to i
    assert "?! ..." in detail["audio/train/utterance/dots.flac"]

    # quarantine, not drop: the manifest and every file that existed are untouched
    assert (corpus / "manifest.jsonl").read_bytes() == manifest_before
    assert all((corpus / p).exists() for p, *_ in CASES if not p.endswith("gone.flac"))


def test_outputs_are_deterministic_and_keep_prepare_rows(corpus):
    write_jsonl(corpus / "quarantine.jsonl", [
        {"audio_filepath": "x.flac", "reason": "tts_failed", "detail": "", "stage": "prepare"},
        {"audio_filepath": "old.flac", "reason": "silent", "detail": "", "stage": "validate"},
    ])
    validate_corpus(corpus, max_bad_fraction=1.0, progress=False, **LIMITS)
    first = [(corpus / n).read_bytes() for n in ("quarantine.jsonl", VALID_MANIFEST_NAME)]
    validate_corpus(corpus, max_bad_fraction=1.0, progress=False, workers=1, **LIMITS)
    assert [(corpus / n).read_bytes() for n in ("quarantine.jsonl", VALID_MANIFEST_NAME)] == first
    rows = read_jsonl(corpus / "quarantine.jsonl")
    assert rows[0]["stage"] == "prepare"
    assert "old.flac" not in {r["audio_filepath"] for r in rows}  # stale validate rows are replaced


def test_too_many_bad_files_raise_with_reasons_and_quarantine_path(corpus):
    with pytest.raises(DataValidationError) as err:
        validate_corpus(corpus, max_bad_fraction=0.05, progress=False, **LIMITS)
    msg = str(err.value)
    assert "12 of 17" in msg and "clipped: 1" in msg and "missing: 1" in msg and "unnormalisable_text: 1" in msg
    assert str(corpus / "quarantine.jsonl") in msg
    assert len(read_jsonl(corpus / "quarantine.jsonl")) == 12  # written before raising
    assert (corpus / "audio/train/positive/corrupt.flac").exists()


def test_no_valid_utterance_raises(tmp_path):
    root = tmp_path / "data"
    rel = _flac(root, "audio/train/background/noise.flac", 0.1 * np.random.default_rng(0).standard_normal(SR))
    silent = _flac(root, "audio/train/positive/s.flac", np.zeros(SR, np.float32))
    write_manifest(root / "manifest.jsonl", [Utterance(rel, 0.0, "", "white", "train", "background"),
                                             Utterance(silent, 1.0, "activate", "v", "train", "positive")])
    with pytest.raises(DataValidationError, match="no valid utterance"):
        validate_corpus(root, max_bad_fraction=1.0, progress=False, **LIMITS)


def test_missing_or_empty_manifest_raises(tmp_path):
    with pytest.raises(DataValidationError, match="manifest.jsonl"):
        validate_corpus(tmp_path, max_bad_fraction=1.0, progress=False, **LIMITS)
    (tmp_path / "manifest.jsonl").write_text("")
    with pytest.raises(DataValidationError, match="no rows"):
        validate_corpus(tmp_path, max_bad_fraction=1.0, progress=False, **LIMITS)


@pytest.mark.parametrize("wav, reason", [
    (np.zeros(8000, np.float32), "silent"),
    (np.full(8000, 0.3, np.float32), "silent"),                        # DC offset only
    (np.full(8000, 3e-5, np.float32) * (-1) ** np.arange(8000), "silent"),  # +-1 LSB dither
    (np.sign(np.sin(np.arange(8000) / 5.0)).astype(np.float32), "clipped"),
    (np.array([0.1, np.inf] * 4000, np.float32), "nan_or_inf"),
    (np.zeros(0, np.float32), "empty"),
    (np.full((400, 1), 0.2, np.float32) * np.arange(400)[:, None] % 0.3, "too_short"),
    (np.zeros((8000, 3), np.float32), "channels"),
    (0.3 * np.sin(np.arange(SR * 6) / 3.0).astype(np.float32), "too_long"),
    (0.3 * np.sin(np.arange(8000) / 3.0).astype(np.float32), None),
    (np.stack([0.3 * np.sin(np.arange(8000) / 3.0)] * 2, 1).astype(np.float32), None),
])
def test_check_audio_reasons(wav, reason):
    got = check_audio(wav, SR, min_duration=0.05, max_duration=5.0)
    assert (got[0] if got else None) == reason
    if got:
        assert got[1]  # a human-readable detail


def test_check_audio_clipping_tolerates_a_few_full_scale_peaks():
    wav = 0.3 * np.sin(np.arange(SR) / 3.0).astype(np.float32)
    wav[::1000] = 1.0  # 0.1 % at full scale: a normalised peak, not clipping
    assert check_audio(wav, SR) is None


def test_check_header_and_transcript():
    assert check_header(3, 100, SR, max_duration=None)[0] == "channels"
    assert check_header(1, SR * 10, SR, max_duration=5.0)[0] == "too_long"
    assert check_header(1, 100, 4000, max_duration=None, min_sample_rate=8000)[0] == "sample_rate"
    assert check_header(2, SR, SR, max_duration=5.0) is None
    assert check_transcript("", "background") is None
    assert check_transcript("?!", "utterance")[0] == "empty_transcript"
    assert check_transcript(None, "negative")[0] == "empty_transcript"
    assert check_transcript("activate", "positive") is None


@pytest.mark.parametrize("text, kind, want", [
    ("Set a timer for 10 minutes.", "utterance", ("set a timer for ten minutes", None)),
    ("It’s 3:15 — café time", "utterance", ("it's three fifteen cafe time", None)),
    ("Hello, World!", "negative", ("Hello, World!", None)),  # trigger-word rows are not normalised here
    ("", "background", ("", None)),
])
def test_normalize_transcript_valid(text, kind, want):
    assert normalize_transcript(text, kind) == want


@pytest.mark.parametrize("text, reason, needle", [
    ("naïve ☃ test", "unnormalisable_text", "'☃'"),
    ("日本 ok", "unnormalisable_text", "'日' '本'"),
    ("  ", "empty_text", "nothing left"),
    (None, "empty_text", "nothing left"),
    ("— ?! —", "empty_text", "nothing left"),
])
def test_normalize_transcript_quarantine_reasons(text, reason, needle):
    norm, bad = normalize_transcript(text, "utterance")
    assert norm is None and bad[0] == reason and needle in bad[1]
