"""User data sources (manifest, librispeech, folder, speech_commands) on tiny real-audio fixtures."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from seqflow.audio.io import read_audio
from seqflow.config import load_config
from seqflow.data.manifest import read_jsonl, read_manifest
from seqflow.data.sources import SOURCES, check_source_config, prepare_source
from seqflow.data.sources.common import MIN_SPEAKERS, Item, assign_splits
from seqflow.data.validate import validate_corpus
from seqflow.errors import ConfigError, DataValidationError

SR = 16000


def write_tone(path: Path, sr: int = 16000, seconds: float = 0.5, channels: int = 1, seed: int = 0, **kw) -> Path:
    """A real, valid (not silent, not clipped) audio file; format from the suffix."""
    t = np.arange(int(round(sr * seconds))) / sr
    rng = np.random.default_rng(seed)
    wav = 0.3 * np.sin(2 * np.pi * (220 + 40 * seed) * t) + 0.01 * rng.standard_normal(t.size)
    wav = np.stack([wav, 0.5 * wav], axis=1) if channels == 2 else wav
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wav.astype(np.float32), sr, **kw)
    return path


def prepare(root: Path, *overrides: str) -> Path:
    """Prepare with ``data.max_bad_fraction=1.0``: these fixtures hold bad items on purpose (the limit itself is
    tested in test_lose_nothing.py)."""
    cfg = load_config(["data.max_bad_fraction=1.0", *overrides, f"data.root={root}"])
    return prepare_source(cfg.data, cfg.audio.sample_rate, cfg.seed, progress=False)


def by_source(root: Path) -> dict[str, object]:
    return {Path(u.extra["source"]).name: u for u in read_manifest(root / "manifest.jsonl")}


@pytest.fixture()
def nemo(tmp_path) -> Path:
    """A NeMo manifest with good lines (WAV 8 kHz, OGG 44.1 kHz stereo, FLAC, absolute path) and bad ones."""
    src = tmp_path / "src"
    write_tone(src / "wavs" / "a.wav", sr=8000, seconds=0.5)
    write_tone(src / "wavs" / "b.ogg", sr=44100, seconds=0.5, channels=2, seed=1, format="OGG", subtype="VORBIS")
    write_tone(src / "wavs" / "c.flac", sr=16000, seconds=0.75, seed=2)
    ext = write_tone(tmp_path / "elsewhere" / "d.wav", sr=22050, seconds=0.4, seed=3)
    lines = [json.dumps({"audio_filepath": "wavs/a.wav", "duration": 9.9, "text": "Hello, World!", "speaker": "s1"}),
             '{"audio_filepath": "wavs/x.wav", "text": oops}',
             json.dumps({"audio_filepath": "wavs/b.ogg", "duration": 0.5, "text": "Set a timer for 10 minutes",
                         "speaker": 7, "lang": "en"}),
             json.dumps({"audio_filepath": "wavs/c.flac", "duration": 0.75}),
             "",
             json.dumps({"audio_filepath": "wavs/missing.wav", "duration": 1.0, "text": "gone"}),
             json.dumps({"audio_filepath": "wavs/c.flac", "text": "third", "split": "validation", "speaker": "s3"}),
             json.dumps({"audio_filepath": str(ext), "text": "far away", "speaker": "s4", "split": "test"}),
             json.dumps({"audio_filepath": "wavs/a.wav", "text": "again"}),
             "[1, 2]"]
    (src / "train.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return src / "train.jsonl"


def test_manifest_source_copies_audio_and_quarantines_bad_lines(nemo, tmp_path):
    root = tmp_path / "data"
    manifest = prepare(root, "data=manifest", f"data.path={nemo}")
    assert manifest == root / "manifest.jsonl"
    utts = read_manifest(manifest)
    rows = {Path(u.extra["source"]).name: u for u in utts}
    assert sorted(rows) == ["a.wav", "b.ogg", "c.flac", "d.wav"]
    assert rows["a.wav"].text == "Hello, World!"  # raw text: normalisation happens later
    assert rows["b.ogg"].speaker == "7" and rows["b.ogg"].extra["lang"] == "en"
    assert rows["c.flac"].split == "val" and rows["d.wav"].split == "test"
    assert rows["a.wav"].duration == pytest.approx(0.5) and rows["d.wav"].duration == pytest.approx(0.4)
    for name, u in rows.items():
        assert u.kind == "utterance" and u.audio_filepath.startswith(f"audio/{u.split}/")
        assert u.audio_filepath.endswith(Path(name).suffix)  # original format kept
        assert u.resolve(root).read_bytes() == Path(u.extra["source"]).read_bytes()  # byte-for-byte copy
    assert rows["b.ogg"].audio_filepath.endswith("wavs/b.ogg")
    assert rows["d.wav"].audio_filepath == "audio/test/external/elsewhere/d.wav"
    order = [("train", "val", "test").index(u.split) for u in utts]
    assert order == sorted(order)

    q = read_jsonl(root / "quarantine.jsonl")
    got = [(r["reason"], r["line"], r["stage"]) for r in q]
    assert got == [("malformed_json", 2, "prepare"), ("missing_key", 4, "prepare"), ("missing_file", 6, "prepare"),
                   ("malformed_json", 10, "prepare"), ("duplicate", 9, "prepare")]  # duplicates found last
    assert q[0]["audio_filepath"] == f"{nemo}:2" and "line 2" in q[0]["detail"]
    assert q[1]["audio_filepath"] == str(nemo.parent / "wavs" / "c.flac") and "'text'" in q[1]["detail"]
    assert q[2]["audio_filepath"] == str(nemo.parent / "wavs" / "missing.wav") and "line 6" in q[2]["detail"]
    summary = json.loads((root / "corpus.json").read_text())
    assert summary["source"] == "manifest" and summary["quarantined"]["malformed_json"] == 2

    # validate runs after prepare: it decodes the copies and keeps the prepare rows at the top
    report = validate_corpus(root, min_duration=0.05, max_duration=40.0, max_bad_fraction=0.6, sample_rate=SR,
                             progress=False)
    assert report.valid == 4 and report.quarantined == 0 and report.dropped == 5  # 5 of 9 bad: 0.56 <= 0.6
    assert [r["stage"] for r in read_jsonl(root / "quarantine.jsonl")] == ["prepare"] * 5


def test_other_rates_and_stereo_read_back_as_16k_mono(nemo, tmp_path):
    root = tmp_path / "data"
    prepare(root, "data=manifest", f"data.path={nemo}")
    rows = by_source(root)
    info = sf.info(str(rows["b.ogg"].resolve(root)))
    assert (info.samplerate, info.channels, info.format) == (44100, 2, "OGG")  # stored as given
    assert sf.info(str(rows["a.wav"].resolve(root))).samplerate == 8000
    for name, seconds in (("b.ogg", 0.5), ("a.wav", 0.5), ("d.wav", 0.4)):
        wav, sr = read_audio(rows[name].resolve(root), target_sr=SR)
        assert sr == SR and wav.ndim == 1 and wav.dtype == np.float32
        assert wav.shape[0] == round(seconds * SR)
        # the 220+ Hz tone survives resampling: energy is in the signal, not lost
        assert 0.1 < float(np.sqrt(np.mean(wav ** 2))) < 0.3


def test_rerun_is_skipped_then_rebuilds_on_change(nemo, tmp_path, caplog):
    root = tmp_path / "data"
    prepare(root, "data=manifest", f"data.path={nemo}")
    before = {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    stamp = (root / "manifest.jsonl").stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="seqflow.data.sources.corpus"):
        prepare(root, "data=manifest", f"data.path={nemo}")
    assert "corpus up to date" in caplog.text
    assert (root / "manifest.jsonl").stat().st_mtime_ns == stamp
    assert {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()} == before

    text = nemo.read_text().replace('"third"', '"third one"')
    nemo.write_text(text)
    prepare(root, "data=manifest", f"data.path={nemo}")
    assert by_source(root)["c.flac"].text == "third one"

    other = tmp_path / "again"  # same input, other root: identical manifest bytes (deterministic)
    prepare(other, "data=manifest", f"data.path={nemo}")
    assert (other / "manifest.jsonl").read_bytes() == (root / "manifest.jsonl").read_bytes()


def test_manifest_path_dict_sets_splits(tmp_path):
    src = tmp_path / "src"
    paths = {}
    for i, split in enumerate(("train", "val", "test")):
        write_tone(src / f"{split}.wav", seed=i)
        paths[split] = src / f"{split}.jsonl"
        paths[split].write_text(json.dumps({"audio_filepath": f"{split}.wav", "duration": 0.5, "text": split,
                                            "split": "train"}) + "\n")
    root = tmp_path / "data"
    spec = "{" + ", ".join(f"{k}: {v}" for k, v in paths.items()) + "}"
    prepare(root, "data=manifest", f"data.path={spec}")
    assert {u.text: u.split for u in read_manifest(root / "manifest.jsonl")} == {"train": "train", "val": "val",
                                                                                  "test": "test"}


def test_no_usable_utterance_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"audio_filepath": "nope.wav", "text": "x"}\nnot json\n')
    root = tmp_path / "data"
    with pytest.raises(DataValidationError, match=r"data\.path=.*bad\.jsonl: no usable utterance.*missing_file 1"):
        prepare(root, "data=manifest", f"data.path={bad}")
    assert [r["reason"] for r in read_jsonl(root / "quarantine.jsonl")] == ["missing_file", "malformed_json"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataValidationError, match="no audio files found"):
        prepare(root, "data=folder", f"data.path={empty}")


def test_config_errors(tmp_path):
    cfg = load_config(["data=manifest", f"data.root={tmp_path / 'data'}"])
    with pytest.raises(ConfigError, match="data.path is not set"):
        check_source_config(cfg.data, SR)
    cfg.data.path = str(tmp_path / "absent.jsonl")
    with pytest.raises(ConfigError, match="does not exist"):
        prepare_source(cfg.data, SR, 1, progress=False)
    cfg.data.source = "youtube"
    with pytest.raises(ConfigError, match="synthetic, manifest, librispeech, folder, speech_commands"):
        prepare_source(cfg.data, SR, 1)
    assert SOURCES == ("synthetic", "manifest", "librispeech", "folder", "speech_commands")
    folder = tmp_path / "f"
    write_tone(folder / "a.wav")
    with pytest.raises(ConfigError, match="speaker_split"):
        prepare(tmp_path / "data", "data=folder", f"data.path={folder}", "data.speaker_split={train: 0, val: 1, test: 1}")


def test_librispeech_layout(tmp_path):
    base = tmp_path / "LibriSpeech"
    for subset, speaker in (("train-clean-100", "19"), ("train-clean-100", "26"), ("dev-clean", "84"),
                            ("test-clean", "61")):
        chap = base / subset / speaker / "198"
        ids = [f"{speaker}-198-{i:04d}" for i in range(2)]
        for i, utt in enumerate(ids):
            write_tone(chap / f"{utt}.flac", seed=i, format="FLAC")
        (chap / f"{speaker}-198.trans.txt").write_text("".join(f"{u} CHAPTER {k} OF THE BOOK\n" for k, u in
                                                               enumerate(ids)))
    chap = base / "train-clean-100" / "19" / "198"
    with open(chap / "19-198.trans.txt", "a") as f:
        f.write("19-198-0009 NO AUDIO FOR THIS LINE\nBROKENLINE\n")
    write_tone(chap / "19-198-0005.flac", format="FLAC")  # audio no transcript line names
    root = tmp_path / "data"
    prepare(root, "data=librispeech", f"data.path={base}")
    utts = read_manifest(root / "manifest.jsonl")
    assert len(utts) == 8
    assert {u.speaker: u.split for u in utts} == {"19": "train", "26": "train", "84": "val", "61": "test"}
    u = next(x for x in utts if x.extra["id"] == "84-198-0001")
    assert u.text == "CHAPTER 1 OF THE BOOK"
    assert u.audio_filepath == "audio/val/LibriSpeech/dev-clean/84/198/84-198-0001.flac"
    q = read_jsonl(root / "quarantine.jsonl")
    assert [(r["reason"], r.get("line")) for r in q] == [("missing_file", 3), ("malformed_transcript", 4),
                                                         ("missing_transcript", None)]
    assert q[2]["audio_filepath"].endswith("19-198-0005.flac")


def test_folder_source_splits_by_speaker(tmp_path):
    base = tmp_path / "recordings"
    for s in range(6):
        for i in range(3):
            wav = write_tone(base / f"spk{s}" / f"utt{i}.wav", sr=8000 if s % 2 else 44100, seed=i)
            wav.with_suffix(".txt").write_text(f"speaker {s}\nsays {i}\n")
    write_tone(base / "spk0" / "untranscribed.ogg", format="OGG", subtype="VORBIS")
    write_tone(base / "test" / "guest" / "x.flac")
    (base / "test" / "guest" / "x.txt").write_text("guest")
    root = tmp_path / "data"
    prepare(root, "data=folder", f"data.path={base}")
    utts = read_manifest(root / "manifest.jsonl")
    assert len(utts) == 19
    assert by_source(root)["utt1.wav"].text in {f"speaker {s} says 1" for s in range(6)}
    guest = by_source(root)["x.flac"]
    assert (guest.split, guest.speaker) == ("test", "guest")
    splits: dict[str, set] = {}
    for u in utts:
        splits.setdefault(u.speaker, set()).add(u.split)
    assert all(len(v) == 1 for v in splits.values())  # speakers are disjoint across splits
    assert {s for v in splits.values() for s in v} == {"train", "val", "test"}
    q = read_jsonl(root / "quarantine.jsonl")
    assert [(r["reason"], Path(r["audio_filepath"]).name) for r in q] == [("missing_transcript", "untranscribed.ogg")]


def make_speech_commands(base: Path, lists: bool = False) -> None:
    for w, word in enumerate(("marvin", "sheila", "yes", "no")):
        for s in range(5):
            write_tone(base / word / f"spk{s:02d}ab_nohash_{w}.wav", seconds=0.3, seed=w)
    write_tone(base / "_background_noise_" / "pink.wav", seconds=2.0)
    write_tone(base / "_background_noise_" / "hum.wav", seconds=2.0, seed=1)
    (base / "_background_noise_" / "README.md").write_text("noise")
    if lists:
        (base / "validation_list.txt").write_text("yes/spk01ab_nohash_2.wav\nno/spk01ab_nohash_3.wav\n")
        (base / "testing_list.txt").write_text("marvin/spk02ab_nohash_0.wav\n")


def test_speech_commands_asr_and_trigger_word(tmp_path):
    base = tmp_path / "sc"
    make_speech_commands(base)
    root = tmp_path / "asr"
    prepare(root, "data=speech_commands", f"data.path={base}")
    utts = read_manifest(root / "manifest.jsonl")
    assert len(utts) == 20 and {u.kind for u in utts} == {"utterance"}
    assert {u.text for u in utts} == {"marvin", "sheila", "yes", "no"}
    per_speaker: dict[str, set] = {}
    for u in utts:
        assert u.speaker == Path(u.audio_filepath).name.split("_nohash_")[0]
        per_speaker.setdefault(u.speaker, set()).add(u.split)
    assert all(len(v) == 1 for v in per_speaker.values()) and len(per_speaker) == 5

    root = tmp_path / "tw"
    prepare(root, "data=speech_commands", f"data.path={base}", "data.trigger_word=Marvin", "data.words=[yes]")
    utts = read_manifest(root / "manifest.jsonl")
    kinds = {(u.kind, u.text) for u in utts}
    assert kinds == {("positive", "marvin"), ("negative", "yes"), ("background", "")}
    bg = [u for u in utts if u.kind == "background"]
    assert len(bg) == 2 and {u.speaker for u in bg} == {"user"}
    assert json.loads((root / "corpus.json").read_text())["trigger_word"] == "marvin"

    with pytest.raises(ConfigError, match="words found: marvin, no, sheila, yes"):
        prepare(tmp_path / "x", "data=speech_commands", f"data.path={base}", "data.trigger_word=hello")


def test_speech_commands_official_lists(tmp_path):
    base = tmp_path / "sc"
    make_speech_commands(base, lists=True)
    root = tmp_path / "data"
    prepare(root, "data=speech_commands", f"data.path={base}")
    split = {Path(u.audio_filepath).relative_to(f"audio/{u.split}").as_posix(): u.split
             for u in read_manifest(root / "manifest.jsonl")}
    assert split["yes/spk01ab_nohash_2.wav"] == "val" and split["marvin/spk02ab_nohash_0.wav"] == "test"
    assert sum(1 for s in split.values() if s == "train") == 17


def test_assign_splits_is_deterministic_and_falls_back_to_files():
    items = [Item(Path(f"/x/{s}-{i}.wav"), f"{s}-{i}.wav", "t", f"spk{s}") for s in range(10) for i in range(2)]
    assert assign_splits(items, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=1) == "speaker"
    first = [it.split for it in items]
    again = [Item(it.src, it.name, it.text, it.speaker) for it in items]
    assign_splits(again, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=1)
    assert [it.split for it in again] == first and first.count("val") == 2 and first.count("test") == 2
    few = [Item(Path(f"/y/{i}.wav"), f"{i}.wav", "t", "only") for i in range(MIN_SPEAKERS + 2)]
    assert assign_splits(few, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=1) == "file"
    assert {it.split for it in few} == {"train", "val", "test"}


def test_rebuild_removes_stale_copies_and_skips_its_own_output(tmp_path):
    base = tmp_path / "proj"  # the corpus root lives inside the scanned folder: its copies are not re-ingested
    for i in range(4):
        write_tone(base / f"u{i}.flac", seed=i).with_suffix(".txt").write_text(f"utterance {i}")
    root = base / "data"
    prepare(root, "data=folder", f"data.path={base}")
    prepare(root, "data=folder", f"data.path={base}", "seed=7")  # other seed: rebuilt, still 4 files
    assert len(read_manifest(root / "manifest.jsonl")) == 4
    (base / "u3.flac").unlink()
    prepare(root, "data=folder", f"data.path={base}")
    assert sorted(p.name for p in (root / "audio").rglob("*") if p.is_file()) == ["u0.flac", "u1.flac", "u2.flac"]
    copy = next((root / "audio").rglob("u0.flac"))
    (tmp_path / "m.jsonl").write_text(json.dumps({"audio_filepath": str(copy), "text": "x"}) + "\n")
    with pytest.raises(ConfigError, match="lies inside"):
        prepare(root, "data=manifest", f"data.path={tmp_path / 'm.jsonl'}")
