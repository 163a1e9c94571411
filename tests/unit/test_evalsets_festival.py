"""The held-out TTS set: manifest, voices, splits, quarantine and reuse with a FAKE renderer;
real festival only where it is already unpacked locally (or installed)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from seqflow.evalsets.debian import STAMP, EvalDataUnavailable
from seqflow.evalsets.festival import VOICES, RenderJob, build_heldout_engine
from seqflow.evalsets.setfiles import content_sha256
from seqflow.evalsets.splits import hash_split

ITEMS = [(f"k{i}", t) for i, t in enumerate(
    ["hey jarvis", "activate", "Set an alarm for 7:30 am.", "please FAIL now", "what's the weather", "日本"])]


def fake_render(jobs: list[RenderJob]) -> None:
    """Writes a 22.05 kHz tone per job, longer for longer texts; any text with FAIL fails its batch."""
    if any("FAIL" in j.text for j in jobs):
        raise RuntimeError("fake festival: cannot say FAIL")
    for j in jobs:
        n = int(22050 * 0.05 * len(j.text))
        wav = 0.2 * np.sin(np.arange(n) * 0.05 * (1 + VOICES.index(j.voice)))
        sf.write(j.wav_path, wav.astype(np.float32), 22050)


def never_called(jobs: list[RenderJob]) -> None:
    raise AssertionError("should have reused the folder")


never_called.__qualname__ = fake_render.__qualname__  # same engine name: only the items decide reuse


def rows_of(manifest: Path) -> list[dict]:
    return [json.loads(line) for line in manifest.read_text().splitlines()]


def test_rows_voices_splits_and_quarantine(tmp_path):
    m = build_heldout_engine(tmp_path / "heldout_tts", ITEMS, tmp_path / "eval-data", renderer=fake_render,
                             workers=1, chunk_size=4, progress=False)
    rows = {r["key"]: r for r in rows_of(m)}
    assert sorted(rows) == ["k0", "k1", "k2", "k4"]
    # voices cycle over the items in order (quarantined items keep their slot)
    assert [rows[k]["speaker"] for k in ("k0", "k1", "k2", "k4")] == [
        "kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts", "ked_diphone"]
    assert rows["k2"]["text"] == "set an alarm for seven thirty a m"
    for k, r in rows.items():
        assert (r["lang"], r["source"], r["split"]) == ("en", "festival", hash_split(k))
        info = sf.info(r["audio_filepath"])
        assert (info.samplerate, info.channels, info.format) == (16000, 1, "FLAC")
        assert r["duration"] == pytest.approx(0.05 * len(dict(ITEMS)[k]), abs=2e-3)
    q = {r["key"]: r for r in map(json.loads, (m.parent / "quarantine.jsonl").read_text().splitlines())}
    assert q["k3"]["reason"] == "render_failed" and "cannot say FAIL" in q["k3"]["detail"]
    assert q["k5"]["reason"] == "unnormalisable_text"
    meta = json.loads((m.parent / "set.json").read_text())
    assert meta["name"] == "heldout_tts" and meta["kinds"] == ["asr", "trigger_word"]
    assert meta["num_utterances"] == 4 and meta["num_quarantined"] == 2
    assert meta["content_sha256"] == content_sha256(list(rows.values()))
    assert not list(m.parent.glob(".render-*"))  # temporary WAVs are gone


def test_process_pool_gives_the_same_set_and_reuse_skips_rendering(tmp_path):
    one = build_heldout_engine(tmp_path / "a", ITEMS, tmp_path, renderer=fake_render, workers=1, progress=False)
    two = build_heldout_engine(tmp_path / "b", ITEMS, tmp_path, renderer=fake_render, workers=2, chunk_size=2,
                               progress=False)
    sha = [json.loads((m.parent / "set.json").read_text())["content_sha256"] for m in (one, two)]
    assert sha[0] == sha[1]
    assert build_heldout_engine(tmp_path / "b", ITEMS, tmp_path, renderer=never_called, progress=False) == two
    with pytest.raises(EvalDataUnavailable, match="should have reused"):  # other items: rendered again
        build_heldout_engine(tmp_path / "b", ITEMS[:2], tmp_path, renderer=never_called, workers=1, progress=False)


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="unique"):
        build_heldout_engine(tmp_path / "x", [("a", "hi"), ("a", "ho")], tmp_path, renderer=fake_render)
    with pytest.raises(EvalDataUnavailable, match="rendered none of 1 items"):
        build_heldout_engine(tmp_path / "y", [("a", "FAIL")], tmp_path, renderer=fake_render, workers=1,
                             progress=False)


def test_no_festival_without_apt_get_is_eval_data_unavailable(tmp_path, monkeypatch):
    if shutil.which("festival"):
        pytest.skip("a system festival is installed here and is used instead of the Debian download, "
                    "so the 'festival unavailable' path cannot occur on this machine")
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))
    with pytest.raises(EvalDataUnavailable, match="apt-get not found"):
        build_heldout_engine(tmp_path / "h", [("a", "hello")], tmp_path / "eval-data", progress=False)


LOCAL_EVAL_DATA = Path(__file__).resolve().parents[2] / "eval-data"


def _festival_here() -> bool:
    """Installed, or unpacked by an earlier ``build_heldout_engine`` with its debs still there."""
    stamp = LOCAL_EVAL_DATA / "festival" / "root" / STAMP
    if shutil.which("festival") and Path("/usr/share/festival/voices/english/kal_diphone").is_dir():
        return True
    return stamp.is_file() and all((LOCAL_EVAL_DATA / "debs" / n).is_file() for n in stamp.read_text().split())


@pytest.mark.skipif(not _festival_here(), reason="real festival render: needs festival installed or unpacked by `make eval-data`; tests never "
                           "download it (renderer, manifest and reuse logic are covered with a fake renderer above)")
def test_real_festival_renders_all_three_voices(tmp_path):
    items = [("p0", "activate"), ("p1", "hey jarvis"), ("p2", "the time is seven o'clock")]
    m = build_heldout_engine(tmp_path / "h", items, LOCAL_EVAL_DATA, progress=False)
    rows = rows_of(m)
    assert [r["speaker"] for r in rows] == ["kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts"]
    for r in rows:
        wav, sr = sf.read(r["audio_filepath"])
        assert sr == 16000 and 0.4 < r["duration"] < 4.0 and np.abs(wav).max() > 0.05


def test_phoneme_mnemonics_are_quarantined_not_spelled_out(tmp_path):
    items = [("k0", "hey jarvis"), ("k1", "[[h'eI dZ'A@vIz]]")]
    m = build_heldout_engine(tmp_path / "set", items, tmp_path, renderer=fake_render, workers=1, progress=False)
    assert [r["key"] for r in rows_of(m)] == ["k0"]
    q = [json.loads(line) for line in (m.parent / "quarantine.jsonl").read_text().splitlines()]
    assert [(r["key"], r["reason"]) for r in q] == [("k1", "phoneme_text")]
