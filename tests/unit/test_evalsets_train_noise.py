"""The training-noise bank from warmux-data (fake package tree, never the real download) and how
clip augmentation finds it."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from seqflow.errors import ShardError
from seqflow.evalsets.debian import STAMP
from seqflow.evalsets.train_noise import DONE, FOLDERS, PACKAGE, build_train_noise
from seqflow.shards.clips import noise_files, train_noise_dirs


def _fake_package(root: Path) -> None:
    (root / "debs").mkdir(parents=True)
    (root / "debs" / f"{PACKAGE}_1.0_all.deb").write_bytes(b"reused, never opened: the tree exists")
    tree = root / "pkgs" / PACKAGE
    rng = np.random.default_rng(0)
    for i, folder in enumerate(FOLDERS):
        (tree / folder).mkdir(parents=True)
        sf.write(tree / folder / f"s{i}.ogg", (0.1 * rng.standard_normal(22050)).astype(np.float32), 22050)
    voices = tree / "usr/share/games/warmux/sound/default/voices"
    voices.mkdir(parents=True)
    sf.write(voices / "hello.wav", np.zeros(1600, np.float32), 16000)  # speech: left out
    (tree / FOLDERS[0] / "broken.ogg").write_bytes(b"OggS not really")
    (tree / STAMP).write_text(f"{PACKAGE}_1.0_all.deb\n")  # as if dpkg -x had unpacked that deb


def test_build_train_noise_converts_effects_and_music_not_voices(tmp_path, caplog):
    # an in-process ray.init earlier in the session (logging_config) may have raised the root level to ERROR
    caplog.set_level(logging.WARNING, logger="seqflow")
    _fake_package(tmp_path)
    out = build_train_noise(tmp_path, progress=False)
    flacs = sorted(p.name for p in out.glob("*.flac"))
    assert len(flacs) == 3 and not any("voices" in n for n in flacs)
    wav, sr = sf.read(out / flacs[0])
    assert sr == 16000 and len(wav) == 16000
    assert "1 undecodable" in caplog.text and (out / DONE).read_text().startswith("3 files")
    assert build_train_noise(tmp_path, progress=False) == out  # reused


def test_optional_noise_dirs_are_used_when_present_required_ones_must_exist(tmp_path):
    present = tmp_path / "noise"
    present.mkdir()
    sf.write(present / "n.wav", np.zeros(160, np.float32), 16000)
    aug = {"noise_dirs": [], "optional_noise_dirs": [str(present), str(tmp_path / "absent")]}
    assert train_noise_dirs(aug) == [str(present)]
    assert [f.name for _, f in noise_files(train_noise_dirs(aug))] == ["n.wav"]
    with pytest.raises(ShardError, match="not a folder"):
        noise_files(train_noise_dirs({"noise_dirs": [str(tmp_path / "typo")]}))
