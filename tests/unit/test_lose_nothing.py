"""Lose nothing (issue 9): every item a source drops is listed with its reason and counts against
``data.max_bad_fraction``; a truncated WAV is quarantined; temp folders of killed shard writes are removed by
the next run. Real audio files, real prepare/validate, a real shard writer SIGKILLed in a subprocess."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from seqflow.config import load_config
from seqflow.data.manifest import read_jsonl, read_manifest
from seqflow.data.sources import prepare_source
from seqflow.data.validate import validate_corpus, wav_truncation
from seqflow.errors import DataValidationError
from seqflow.shards.index import verify_index
from seqflow.shards.writer import clean_stale_temp, shard_config_hash, shard_dataset

SR = 16000
LIMITS = dict(min_duration=0.05, max_duration=20.0, sample_rate=SR)


def tone(path: Path, seconds: float = 0.3, seed: int = 0, silent: bool = False) -> Path:
    """A real 16-bit WAV (FLAC for a .flac name): a tone plus a little noise, or digital silence."""
    t = np.arange(int(SR * seconds)) / SR
    wav = 0.3 * np.sin(2 * np.pi * (200 + 13 * seed) * t) + 0.01 * np.random.default_rng(seed).standard_normal(t.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.zeros_like(wav) if silent else wav.astype(np.float32), SR, subtype="PCM_16")
    return path


def prepare(root: Path, *overrides: str) -> Path:
    cfg = load_config([*overrides, f"data.root={root}"])
    return prepare_source(cfg.data, cfg.audio.sample_rate, cfg.seed, progress=False)


def nemo(src: Path, n: int, missing: int, silent: int = 0) -> Path:
    """``n`` manifest lines; the last ``missing`` point to files that do not exist, ``silent`` files are silent."""
    lines = []
    for i in range(n):
        if i < n - missing:
            tone(src / "wavs" / f"u{i:03d}.wav", seed=i, silent=i < silent)
        lines.append(json.dumps({"audio_filepath": f"wavs/u{i:03d}.wav", "text": f"utterance {i}",
                                 "speaker": f"s{i % 5}"}))
    (src / "train.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return src / "train.jsonl"


def test_manifest_pointing_at_missing_files_fails_naming_counts_and_quarantine(tmp_path):
    manifest, root = nemo(tmp_path / "src", 100, missing=94), tmp_path / "data"
    with pytest.raises(DataValidationError) as err:
        prepare(root, "data=manifest", f"data.path={manifest}")
    msg = str(err.value)
    assert "\n" not in msg and "94 of 100 source items dropped at prepare" in msg
    assert "missing_file: 94" in msg and f"see {root / 'quarantine.jsonl'}" in msg
    rows = read_jsonl(root / "quarantine.jsonl")
    assert len(rows) == 94 and {r["reason"] for r in rows} == {"missing_file"}
    assert rows[0]["line"] == 7 and "u006.wav" in rows[0]["audio_filepath"]
    assert not (root / "corpus.json").exists() and not (root / "audio").exists()  # nothing copied


def test_prepare_drops_and_validate_rejects_count_together(tmp_path):
    """3 missing (3 %, prepare passes) + 3 silent at validate = 6 of 100 > 5 %; 2 silent = 5 % passes."""
    manifest, root = nemo(tmp_path / "src", 100, missing=3, silent=3), tmp_path / "data"
    prepare(root, "data=manifest", f"data.path={manifest}")
    with pytest.raises(DataValidationError) as err:
        validate_corpus(root, max_bad_fraction=0.05, progress=False, **LIMITS)
    msg = str(err.value)
    assert "6 of 100 files quarantined (3 at validate, 3 dropped at prepare)" in msg
    assert "missing_file: 3" in msg and "silent: 3" in msg and str(root / "quarantine.jsonl") in msg
    assert [r["stage"] for r in read_jsonl(root / "quarantine.jsonl")] == ["prepare"] * 3 + ["validate"] * 3

    manifest, root = nemo(tmp_path / "src2", 100, missing=3, silent=2), tmp_path / "data2"
    prepare(root, "data=manifest", f"data.path={manifest}")
    report = validate_corpus(root, max_bad_fraction=0.05, progress=False, **LIMITS)
    assert (report.valid, report.quarantined, report.dropped) == (95, 2, 3)
    assert report.bad_fraction == pytest.approx(0.05) and report.dropped_reasons == {"missing_file": 3}
    assert "3 dropped at prepare (missing_file 3)" in report.summary()


def test_folder_source_lists_files_it_does_not_read(tmp_path):
    base = tmp_path / "rec"
    for i in range(10):
        tone(base / f"spk{i % 5}" / f"a{i}.wav", seed=i).with_suffix(".txt").write_text(f"hello {i}\n")
    m4a = base / "spk0" / "memo.m4a"
    m4a.write_bytes(b"\x00\x00\x00\x1cftypM4A \x00\x00\x02\x00M4A isommp42" + bytes(4000))  # an AAC container
    m4a.with_suffix(".txt").write_text("a voice memo\n")
    (base / "spk1" / "orphan.txt").write_text("a transcript whose audio was lost\n")
    (base / "README.md").write_text("recorded in 2026\n")  # not data: never listed
    (base / ".DS_Store").write_bytes(b"\x00")
    root = tmp_path / "data"
    with pytest.raises(DataValidationError, match=r"2 of 12 source items dropped .*missing_audio: 1, "
                                                  r"unsupported_format: 1; see "):
        prepare(root, "data=folder", f"data.path={base}")
    prepare(root, "data=folder", f"data.path={base}", "data.max_bad_fraction=0.2")
    rows = {Path(r["audio_filepath"]).name: r for r in read_jsonl(root / "quarantine.jsonl")}
    assert sorted(rows) == ["memo.m4a", "orphan.txt"]
    assert rows["memo.m4a"]["reason"] == "unsupported_format" and ".m4a is not read" in rows["memo.m4a"]["detail"]
    assert rows["orphan.txt"]["reason"] == "missing_audio"
    assert len(read_manifest(root / "manifest.jsonl")) == 10
    report = validate_corpus(root, max_bad_fraction=0.2, progress=False, **LIMITS)
    assert report.dropped == 2 and report.bad_fraction == pytest.approx(2 / 12)
    # the validate stage returns the prepare drops too (flow summary)
    from seqflow import stages

    counts = stages.validate(load_config(["data=folder", f"data.path={base}", "data.max_bad_fraction=0.2",
                                          f"data.root={root}", "data.min_duration=0.05"]))
    assert counts == {"total": 10, "valid": 10, "quarantined": 0, "reasons": {}, "dropped": 2,
                      "dropped_reasons": {"missing_audio": 1, "unsupported_format": 1},
                      "bad_fraction": round(2 / 12, 6)}, counts


def test_librispeech_and_speech_commands_list_unread_and_untranscribed_files(tmp_path):
    libri = tmp_path / "LibriSpeech" / "train-clean-100"
    chap = libri / "19" / "198"
    for i in range(3):
        tone(chap / f"19-198-{i:04d}.flac", seed=i)
    (chap / "19-198-0003.m4a").write_bytes(bytes(2000))  # named by a transcript line, not readable
    (chap / "19-198.trans.txt").write_text("".join(f"19-198-{i:04d} LINE {i}\n" for i in range(4)))
    tone(libri / "26" / "300" / "26-300-0000.flac")  # a chapter without its .trans.txt
    (libri.parent / "SPEAKERS.TXT").write_text("; not data\n")
    prepare(tmp_path / "d1", "data=librispeech", f"data.path={libri.parent}", "data.max_bad_fraction=1.0")
    got = [(r["reason"], Path(r["audio_filepath"]).name, r.get("line")) for r in read_jsonl(tmp_path / "d1" /
                                                                                          "quarantine.jsonl")]
    assert got == [("unsupported_format", "19-198-0003.m4a", 4), ("missing_transcript", "26-300-0000.flac", None)]

    sc = tmp_path / "sc"
    for word in ("yes", "no"):
        for i in range(3):
            tone(sc / word / f"spk{i}_nohash_0.wav", seed=i)
    (sc / "no" / "spk9_nohash_0.m4a").write_bytes(bytes(2000))
    prepare(tmp_path / "d2", "data=speech_commands", f"data.path={sc}", "data.max_bad_fraction=1.0")
    rows = read_jsonl(tmp_path / "d2" / "quarantine.jsonl")
    assert [(r["reason"], Path(r["audio_filepath"]).name) for r in rows] == [("unsupported_format",
                                                                               "spk9_nohash_0.m4a")]
    with pytest.raises(DataValidationError, match="1 of 7 source items dropped"):
        prepare(tmp_path / "d3", "data=speech_commands", f"data.path={sc}", "data.max_bad_fraction=0.1")


def _riff(path: Path, frames: int, data_size: int | None = None, tail: bytes = b"") -> Path:
    """A mono 16-bit WAV written by hand: ``data_size`` overrides the data chunk's declared size."""
    pcm = (0.3 * 32767 * np.sin(np.arange(frames) / 7)).astype("<i2").tobytes()
    fmt = struct.pack("<4sIHHIIHH", b"fmt ", 16, 1, 1, SR, 2 * SR, 2, 16)
    data = struct.pack("<4sI", b"data", len(pcm) if data_size is None else data_size) + pcm
    body = b"WAVE" + fmt + data + tail
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def test_truncated_wav_is_quarantined_not_shortened(tmp_path):
    base = tmp_path / "rec"
    for i in range(19):
        tone(base / f"spk{i % 4}" / f"a{i}.wav", seed=i).with_suffix(".txt").write_text(f"hello {i}\n")
    cut = tone(base / "spk1" / "cut.wav", seconds=2.0, seed=42)
    cut.write_bytes(cut.read_bytes()[:44 + 2 * int(0.3 * SR)])  # a copy cut short after 0.3 s of 2 s
    cut.with_suffix(".txt").write_text("cut short\n")
    assert sf.info(str(cut)).frames == int(0.3 * SR)  # libsndfile silently reports what is there
    root = tmp_path / "data"
    prepare(root, "data=folder", f"data.path={base}")
    with pytest.raises(DataValidationError, match=r"1 of 20 files quarantined .*reasons: truncated: 1"):
        validate_corpus(root, max_bad_fraction=0.04, progress=False, **LIMITS)
    (row,) = read_jsonl(root / "quarantine.jsonl")
    assert row["reason"] == "truncated" and row["audio_filepath"].endswith("cut.wav")
    assert row["detail"].startswith("header claims 32000 frames (2.000 s), the file holds 4800 (0.300 s)")
    report = validate_corpus(root, max_bad_fraction=0.05, progress=False, **LIMITS)
    assert report.valid == 19 and report.reasons == {"truncated": 1}

    # complete WAVs are not flagged: odd chunk after the data, streamed size (0xFFFFFFFF), WAVE_FORMAT_EXTENSIBLE
    assert wav_truncation(_riff(tmp_path / "list.wav", 801, tail=b"LIST" + struct.pack("<I", 5) + b"abcde\x00")) is None
    assert wav_truncation(_riff(tmp_path / "stream.wav", 800, data_size=0xFFFFFFFF)) is None
    ext = tone(tmp_path / "ext.wav", seed=3)
    sf.write(str(ext), sf.read(str(ext))[0], SR, subtype="PCM_24")
    assert wav_truncation(ext) is None and wav_truncation(tone(tmp_path / "x.flac")) is None
    assert wav_truncation(_riff(tmp_path / "short.wav", 800, data_size=1600 + 64))[0] == "truncated"


WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import numpy as np
    from seqflow.shards.writer import write_shards

    def samples():
        rng = np.random.default_rng(0)
        for i in range(1000):
            if i == 3:  # three samples are in the tar: tell the test, then wait for the SIGKILL
                Path(sys.argv[2]).write_text("ready")
                time.sleep(300)
            yield {"__key__": f"s-{i:04d}", "audio": (0.1 * rng.standard_normal(8000)).astype(np.float32),
                   "sample_rate": 16000, "txt": "", "json": {}}

    write_shards(samples(), Path(sys.argv[1]), "train", target_bytes=10**9, min_shards=1, progress=False)
""")


@pytest.mark.slow
def test_temp_folder_of_a_killed_shard_write_is_removed_by_the_next_run(tmp_path, caplog):
    from test_shards_clips import make_corpus

    make_corpus(tmp_path / "data")
    cfg = load_config(["model=trigger_word", f"shards.root={tmp_path}/shards", f"data.root={tmp_path}/data",
                       "clips.duration=2.0", "clips.train_clips=8", "clips.val_clips=4", "clips.test_clips=4",
                       "shards.min_shards=2", "ray.num_workers=2", "trainer.num_workers=1", "augment.enabled=false"])
    sets = tmp_path / "shards" / f"md5x-{shard_config_hash(cfg)}"
    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(sets / "train"), str(ready)])
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists(), f"writer did not start (exit {proc.poll()})"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    (killed,) = [p for p in sets.iterdir() if p.name.startswith(".train.tmp-")]
    assert killed.name.startswith(f".train.tmp-{socket.gethostname()}-{proc.pid}-")
    assert (killed / "shard-000000.tar").is_file() and not (sets / "train").exists()
    live = sets / f".val.tmp-{socket.gethostname()}-{os.getpid()}-abc123"  # a writer that still runs: kept
    older = sets / ".test.old-k2j4_x9a"  # an older seqflow's folder (no writer recorded): removed
    other_set = tmp_path / "shards" / "md5y-000000000000" / f".train.tmp-{socket.gethostname()}-{proc.pid}-zz"
    for d in (live, older, other_set):
        d.mkdir(parents=True)

    with caplog.at_level(logging.WARNING, logger="seqflow.shards.writer"):
        shard_set = shard_dataset(cfg, tmp_path / "data", "md5x", progress=False)
    removed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("removed ")]
    assert len(removed) == 3 and any(f"{killed}: temporary folder" in m and f"pid {proc.pid}" in m for m in removed)
    assert not killed.exists() and not older.exists() and not other_set.exists() and live.is_dir()
    index = json.loads((sets / "train" / "index.json").read_text())
    assert shard_set.num_samples["train"] == index["num_samples"] == 8  # written afresh, not the 3 killed ones
    assert verify_index(sets / "train" / "index.json") == []
    assert clean_stale_temp(sets) == [] and live.is_dir()  # nothing left to clean; the live one stays
