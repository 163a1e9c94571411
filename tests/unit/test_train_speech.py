"""Train-only real speech: the Asterisk es/ru bank (fake package trees, never the real download) and
its snippets as negatives in train clips only (``clips.real_speech``)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import soundfile as sf
from _evalsets_trees import asterisk
from test_shards_clips import SR, make_corpus, make_source

import seqflow.evalsets.train_noise as tn
import seqflow.shards.real_speech as rs_mod
from seqflow.config import load_config
from seqflow.errors import ConfigError
from seqflow.evalsets.builders import SETS
from seqflow.evalsets.debian import STAMP, EvalDataUnavailable
from seqflow.shards.clips import ClipSource
from seqflow.shards.real_speech import RealSpeech
from seqflow.shards.writer import shard_config_hash

FREQS = (2000.0, 3000.0)  # one tone per fake recording; the corpus words are 440/880 Hz


def test_train_packages_and_evaluation_packages_are_disjoint():
    evaluation = {p for spec in SETS.values() for p in spec.packages}
    assert set(tn.TRAIN_PACKAGES).isdisjoint(evaluation)
    assert set(tn.SPEECH_PACKAGES) == {"asterisk-core-sounds-es-wav", "asterisk-core-sounds-ru-wav"}
    assert {"asterisk-core-sounds-fr-wav", "asterisk-core-sounds-it-wav"} <= evaluation  # the languages it measures


def _fake_packages(root):
    (root / "debs").mkdir(parents=True)
    for pkg, voice in zip(tn.SPEECH_PACKAGES, ("es_MX_f_Allison", "ru_RU_f_IvrvoiceRU")):
        (root / "debs" / f"{pkg}_1.0_all.deb").write_bytes(b"reused, never opened: the tree exists")
        asterisk(root / "pkgs" / pkg, voice)  # 3 prompts + a beep + silence/ at 8 kHz
        (root / "pkgs" / pkg / STAMP).write_text(f"{pkg}_1.0_all.deb\n")


def test_build_train_speech_converts_prompts_atomically_and_reuses(tmp_path, monkeypatch):
    _fake_packages(tmp_path)
    out = tn.build_train_speech(tmp_path, progress=False)
    assert [p.name for p in out] == list(tn.SPEECH_PACKAGES)
    for folder in out:
        flacs = sorted(p.name for p in folder.glob("*.flac"))
        assert len(flacs) == 3 and not any("beep" in n or "silence" in n for n in flacs)
        wav, sr = sf.read(folder / flacs[0])
        assert sr == 16000 and wav.ndim == 1
        assert (folder / tn.DONE).read_text().startswith("3 files") and tn.bank_seconds(folder) == pytest.approx(0.9)
    assert sorted(p.name for p in (tmp_path / "train-speech").iterdir()) == list(tn.SPEECH_PACKAGES)  # no temp
    monkeypatch.setattr(tn, "fetch_packages", lambda *a: pytest.fail("a complete bank must be reused"))
    assert tn.build_train_speech(tmp_path, progress=False) == out


def test_build_train_speech_without_apt_prints_one_line(tmp_path, monkeypatch, capsys):
    def unavailable(names, debs_dir):
        raise EvalDataUnavailable("apt-get not found")

    monkeypatch.setattr(tn, "fetch_packages", unavailable)
    assert tn.build_train_speech(tmp_path, progress=False) == []
    assert capsys.readouterr().out == "eval-data: training speech skipped (apt-get not found)\n"


def _speech_dir(root, seconds=4.0):
    d = root / "speech"
    d.mkdir()
    t = np.arange(int(seconds * 8000)) / 8000
    for i, f in enumerate(FREQS):  # 8 kHz like the prompts: resampled on load
        sf.write(d / f"p{i}.wav", (0.3 * np.sin(2 * np.pi * f * t)).astype(np.float32), 8000)
    return d


def _peak_hz(x):
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / SR)[int(np.argmax(spec))])


def _source(tmp_path, dirs, fraction=0.5, **kw):
    return make_source(tmp_path, max_negatives=3,
                       real_speech=RealSpeech(dirs=tuple(str(d) for d in dirs), fraction=fraction, span_s=(0.3, 0.6)),
                       **kw)


def test_train_clips_hold_real_speech_cut_from_the_files_val_and_test_never(tmp_path, monkeypatch):
    make_corpus(tmp_path)
    speech = _speech_dir(tmp_path)
    reads = []
    real_read = rs_mod.read_audio
    monkeypatch.setattr(rs_mod, "read_audio", lambda p, **kw: reads.append(p) or real_read(p, **kw))
    src = _source(tmp_path, [speech, tmp_path / "absent"], clip_counts={"train": 20, "val": 10, "test": 10})
    train = list(src.clips("train"))
    real = [(c, s) for c in train for s in c["json"]["segments"] if s.get("real_speech")]
    assert real and all(s["kind"] == "negative" and s["text"] == "" for _, s in real)
    assert any(s["kind"] == "negative" and not s.get("real_speech") for c in train for s in c["json"]["segments"])
    for clip, seg in real:
        cut = clip["audio"][int(round(seg["start"] * SR)):int(round(seg["end"] * SR))]
        assert 0.3 - 1e-3 <= len(cut) / SR <= 0.6 + 1e-3
        assert min(abs(_peak_hz(cut) - f) for f in FREQS) < 20  # the recording's tone, not a word's
    for split in ("val", "test"):
        assert not any(s.get("real_speech") for c in src.clips(split) for s in c["json"]["segments"])
    list(src.clips("train"))
    assert len(reads) == len(FREQS)  # decoded once per ClipSource
    again = list(_source(tmp_path, [speech], clip_counts={"train": 20, "val": 10, "test": 10}).clips("train"))
    assert all(np.array_equal(a["audio"], b["audio"]) and a["json"] == b["json"] for a, b in zip(train, again))


def test_absent_folders_make_todays_clips_and_log_once(tmp_path, caplog):
    make_corpus(tmp_path)
    plain = make_source(tmp_path, max_negatives=3)
    absent = _source(tmp_path, [tmp_path / "nope"], fraction=1.0)
    caplog.set_level(logging.INFO, logger="seqflow.shards.clips")
    for split in ("train", "val", "test"):
        for a, b in zip(plain.clips(split), absent.clips(split)):
            assert np.array_equal(a["audio"], b["audio"]) and a["json"] == b["json"]
    assert sum("real speech folder(s) absent" in r.getMessage() for r in caplog.records) == 1


def _cfg(tmp_path, *extra):
    return load_config([f"shards.root={tmp_path}/shards", f"data.root={tmp_path}/data",
                        f"evaluate.eval_data={tmp_path}/eval-data", f"augment.cache_dir={tmp_path}/cache", *extra])


def test_config_hash_unchanged_while_unused_and_tracks_the_files_when_used(tmp_path):
    today = shard_config_hash(_cfg(tmp_path, "~clips.real_speech"))
    assert shard_config_hash(_cfg(tmp_path)) == today  # default folders absent (no eval-data)
    speech = _speech_dir(tmp_path)
    used = _cfg(tmp_path, f"clips.real_speech.dirs=[{speech}]")
    assert shard_config_hash(used) != today
    assert shard_config_hash(_cfg(tmp_path, f"clips.real_speech.dirs=[{speech}]", "clips.real_speech.fraction=0")) == today
    before = shard_config_hash(used)
    sf.write(speech / "p9.wav", np.zeros(800, np.float32), 8000)
    assert shard_config_hash(used) != before
    src = ClipSource.from_config(used, tmp_path / "data")
    assert src.real_speech.dirs == (str(speech),) and src.real_speech.fraction == pytest.approx(0.3)
    default = ClipSource.from_config(_cfg(tmp_path), tmp_path / "data").real_speech
    assert [d.rsplit("/", 1)[1] for d in default.dirs] == list(tn.SPEECH_PACKAGES)
    with pytest.raises(ConfigError, match="fraction"):
        RealSpeech.from_clips({"real_speech": {"dirs": [], "fraction": 1.5}})
