"""Real-audio evaluation sets built from FAKE unpacked package trees (never the real downloads)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf

from _evalsets_trees import all_trees, alsa, asterisk, corrupt, debs_for, fillets, ktuberling, saytime, tone
from seqflow.evalsets import sources as src
from seqflow.evalsets.__main__ import main
from seqflow.evalsets.build import build_eval_data
from seqflow.evalsets.builders import SETS, Caps, build_set
from seqflow.evalsets.debian import STAMP
from seqflow.evalsets.setfiles import content_sha256

ROW_FIELDS = {"audio_filepath", "duration", "text", "lang", "speaker", "source", "split", "key", "audio_sha256"}


def rows_of(manifest: Path) -> list[dict]:
    return [json.loads(line) for line in manifest.read_text().splitlines()]


@pytest.fixture
def trees(tmp_path: Path) -> dict[str, Path]:
    return all_trees(tmp_path / "pkgs")


def test_fillets_scanner_finds_characters(tmp_path):
    items = src.fillets_items(fillets(tmp_path / "t", "nl"), "fillets-ng-data-nl")
    speakers = {i.path.stem: i.speaker for i in items}
    assert speakers["vit-m-hlava"] == speakers["m-obdivovat"] == "fillets-nl/small-fish"
    assert speakers["vit-v-hlava"] == speakers["v-chytra"] == speakers["sp-shout_big_00"] == "fillets-nl/big-fish"
    assert speakers["cil-m-hlaska1"] == "fillets-nl/small-fish"  # sound/share/border/nl/
    assert speakers["vit-hs-demoni0"] == "fillets-nl/city-hs"
    assert speakers["b1-spletl"] == "fillets-nl/gods-b1"
    assert all(i.lang == "nl" and i.text == "" and i.speaker_known for i in items)
    assert [i.key for i in items] == sorted(i.key for i in items)


def test_asterisk_scanner_skips_silence_and_beeps(tmp_path):
    items = src.asterisk_items(asterisk(tmp_path / "t", "it_IT_m_Carlo"), "asterisk-core-sounds-it-wav")
    assert sorted(i.path.name for i in items) == ["1.wav", "activated.wav", "goodbye.wav"]
    assert {i.speaker for i in items} == {"asterisk/it_IT_m_Carlo"} and {i.lang for i in items} == {"it"}


def test_word_scanners_read_transcripts(tmp_path):
    kt = src.ktuberling_items(ktuberling(tmp_path / "kt"), "ktuberling-data")
    assert {i.path.name: i.text for i in kt} == {"egypt_camel.ogg": "camel", "moon_fallingstar.ogg": "falling star"}
    st = {i.path.stem: i.text for i in src.saytime_items(saytime(tmp_path / "st"), "saytime")}
    assert st == {"13": "13", "the_time_is": "the time is", "oclock": "o'clock", "am": "a.m."}
    al = alsa(tmp_path / "al")
    assert {i.text for i in src.alsa_word_items(al, "alsa-utils")} == {"front left", "rear center"}
    assert [i.path.stem for i in src.alsa_noise_items(al, "alsa-utils")] == ["Noise"]
    assert src.ktuberling_items(tmp_path / "empty", "ktuberling-data") == []


def test_real_words_en_manifest_rows(trees, tmp_path):
    out = tmp_path / "sets" / "real_words_en"
    manifest = build_set("real_words_en", trees, out, debs_for(trees))
    rows = rows_of(manifest)
    assert {r["text"] for r in rows} == {"camel", "falling star", "thirteen", "the time is", "o'clock", "a m",
                                         "front left", "rear center"}
    for r in rows:
        assert set(r) == ROW_FIELDS
        p = Path(r["audio_filepath"])
        assert p.is_absolute() and p.parent == (out / "audio").resolve() and p.suffix == ".flac"
        info = sf.info(str(p))
        assert (info.samplerate, info.channels, info.format) == (16000, 1, "FLAC")
        assert r["duration"] == pytest.approx(info.frames / 16000, abs=1e-3)
        assert r["lang"] == "en" and r["split"] in ("dev", "eval") and r["speaker"] == r["source"]
    meta = json.loads((out / "set.json").read_text())
    assert meta["name"] == "real_words_en" and meta["kinds"] == ["asr", "trigger_word"]
    assert meta["packages"] == {p: f"{p}_1.0-1_all.deb" for p in ("ktuberling-data", "saytime", "alsa-utils")}
    assert meta["num_utterances"] == len(rows) == 8
    assert meta["hours"] == pytest.approx(sum(r["duration"] for r in rows) / 3600, abs=1e-4)
    assert sum(v["num_utterances"] for v in meta["per_split"].values()) == len(rows)
    assert meta["content_sha256"] == content_sha256(rows)
    assert (out / "quarantine.jsonl").read_text() == ""


def test_speech_negatives_keep_speakers_in_one_half(trees, tmp_path):
    rows = rows_of(build_set("real_speech_negatives", trees, tmp_path / "neg", debs_for(trees)))
    assert {r["lang"] for r in rows} == {"cs", "nl", "fr", "it"} and {r["text"] for r in rows} == {""}
    halves: dict[str, set] = {}
    for r in rows:
        halves.setdefault(r["speaker"], set()).add(r["split"])
    assert all(len(h) == 1 for h in halves.values())
    assert {r["split"] for r in rows} == {"dev", "eval"}


def test_noise_rows_have_no_language_or_text(trees, tmp_path):
    rows = rows_of(build_set("real_noise", trees, tmp_path / "noise", debs_for(trees)))
    assert {r["source"] for r in rows} == {"colobot-common-sounds", "lincity-ng-data", "alsa-utils"}
    assert {r["lang"] for r in rows} == {""} and {r["text"] for r in rows} == {""} and len(rows) == 6


def test_corrupt_file_is_quarantined_not_dropped(trees, tmp_path):
    bad = corrupt(trees["ktuberling-data"] / "usr/share/ktuberling/sounds/en/egypt_camel.ogg")
    out = tmp_path / "words"
    rows = rows_of(build_set("real_words_en", trees, out, debs_for(trees)))
    assert "camel" not in {r["text"] for r in rows} and len(rows) == 7
    q = [json.loads(line) for line in (out / "quarantine.jsonl").read_text().splitlines()]
    assert len(q) == 1 and q[0]["path"] == str(bad) and q[0]["reason"] == "unreadable"
    assert json.loads((out / "set.json").read_text())["num_quarantined"] == 1


def test_content_hash_is_stable_and_folder_is_reused(trees, tmp_path):
    a = build_set("real_words_en", trees, tmp_path / "a", debs_for(trees))
    b = build_set("real_words_en", trees, tmp_path / "b", debs_for(trees))
    ha, hb = (json.loads((m.parent / "set.json").read_text())["content_sha256"] for m in (a, b))
    assert ha == hb
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "a").rglob("*") if p.is_file()}
    assert build_set("real_words_en", trees, tmp_path / "a", debs_for(trees)) == a
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "a").rglob("*") if p.is_file()} == before
    # another .deb version is another build: rebuilt
    debs = {**debs_for(trees), "saytime": "saytime_2.0-1_all.deb"}
    build_set("real_words_en", trees, tmp_path / "a", debs)
    assert json.loads((tmp_path / "a/set.json").read_text())["packages"]["saytime"] == "saytime_2.0-1_all.deb"


def test_caps_limit_each_source(trees, tmp_path):
    rows = rows_of(build_set("real_words_en", trees, tmp_path / "c", debs_for(trees), caps=Caps(max_files=1)))
    assert sorted(r["source"] for r in rows) == ["alsa-utils", "ktuberling-data", "saytime"]
    tone(trees["saytime"] / "usr/share/saytime/hours.au", sr=8000, seconds=2.0, format="AU", subtype="ULAW")
    rows = rows_of(build_set("real_words_en", trees, tmp_path / "d", debs_for(trees), caps=Caps(max_seconds=0.5)))
    assert len([r for r in rows if r["source"] == "saytime"]) == 2  # 0.3 s + 0.3 s reaches 0.5 s


def _offline_root(tmp_path: Path) -> Path:
    """An eval-data root whose debs and unpacked trees are already there (no apt-get/dpkg needed)."""
    root = tmp_path / "eval-data"
    trees = all_trees(root / "pkgs")
    (root / "debs").mkdir()
    for p, deb in debs_for(trees).items():
        (root / "debs" / deb).write_bytes(b"fake deb")
        (trees[p] / STAMP).write_text(deb + "\n")
    return root


def test_build_eval_data_offline_reuses_debs_and_trees(tmp_path, monkeypatch):
    root = _offline_root(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))  # no apt-get, no dpkg: nothing to fetch
    built = build_eval_data(root, progress=False)
    assert set(built) == set(SETS)
    assert all(m == root / name / "manifest.jsonl" and m.is_file() for name, m in built.items())
    assert main(["--root", str(root), "--sets", "real_noise", "--no-progress"]) == 0


def test_without_apt_get_prints_one_line_and_exits_0(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))
    assert build_eval_data(tmp_path / "eval-data", ["real_words_en"], progress=False) == {}
    assert main(["--root", str(tmp_path / "eval-data")]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln]
    assert lines == ["eval-data: skipped (apt-get not found (evaluation data comes from Debian packages))"] * 2
    with pytest.raises(ValueError, match="unknown evaluation set"):
        build_eval_data(tmp_path, ["nope"])
