"""Real noise for *training* mixes, from a Debian package no evaluation set uses: ``warmux-data``
(a game's weapon and effect sounds and its music; GPL-2+). Built by the same ``make eval-data``
into ``<root>/train-noise/warmux-data/*.flac`` (16 kHz mono); the clip augmentation mixes it in
when ``augment.optional_noise_dirs`` points there. The package's character voices are left out
(speech with unknown words has no place in a noise bank)."""

from __future__ import annotations

import logging
from pathlib import Path

from tqdm import tqdm

from seqflow.audio.io import AUDIO_SUFFIXES, read_audio
from seqflow.errors import AudioDecodeError
from seqflow.evalsets.debian import EvalDataUnavailable, extract, fetch_packages
from seqflow.evalsets.setfiles import SAMPLE_RATE, audio_name, write_flac

log = logging.getLogger("seqflow.evalsets")
PACKAGE = "warmux-data"
FOLDERS = ("usr/share/games/warmux/sound/default/weapons", "usr/share/games/warmux/sound/default/misc",
           "usr/share/games/warmux/music")
DONE = ".complete"


def build_train_noise(root: Path, progress: bool = True) -> Path | None:
    """Fetch, unpack and convert the training noise; returns its folder, or None (one printed
    line) when the package cannot be obtained. Reused when complete; undecodable files are
    logged and left out."""
    out = Path(root) / "train-noise" / PACKAGE
    if (out / DONE).is_file():
        return out
    try:
        deb = fetch_packages([PACKAGE], Path(root) / "debs")[PACKAGE]
        tree = extract(deb, Path(root) / "pkgs" / PACKAGE)
    except EvalDataUnavailable as e:
        print(f"eval-data: training noise skipped ({e})", flush=True)
        return None
    files = sorted(f for d in FOLDERS for f in (tree / d).rglob("*") if f.suffix.lower() in AUDIO_SUFFIXES)
    bad, seconds = [], 0.0
    for f in tqdm(files, desc="train-noise: converting", unit="file", disable=not progress):
        try:
            wav, _ = read_audio(f, target_sr=SAMPLE_RATE)
        except AudioDecodeError as e:
            bad.append(f"{e.path}: {e.reason}")
            continue
        seconds += write_flac(wav, out / audio_name(str(f.relative_to(tree))))[0]
    if bad:
        log.warning("train-noise: %d undecodable file(s) left out, first: %s", len(bad), bad[0])
    (out / DONE).write_text(f"{len(files) - len(bad)} files, {seconds:.1f} s from {deb.name}\n")
    print(f"eval-data: train-noise/{PACKAGE}: {len(files) - len(bad)} files, {seconds / 60:.1f} min -> {out}",
          flush=True)
    return out
