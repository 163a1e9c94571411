"""Train-only banks of real audio, from Debian packages no evaluation set uses. Built by the same
``make eval-data``; each package becomes ``<root>/<bank>/<package>/*.flac`` (16 kHz mono 16-bit).

* ``train-noise/warmux-data`` (:func:`build_train_noise`) — a game's weapon and effect sounds and its
  music (GPL-2+); the clip augmentation mixes it in when ``augment.optional_noise_dirs`` points
  there. The package's character voices are left out (speech with unknown words has no place in a
  noise bank).
* ``train-speech/asterisk-core-sounds-{es,ru}-wav`` (:func:`build_train_speech`) — Asterisk telephone
  prompts by real voices in Mexican Spanish and Russian (CC-BY-SA-3.0 / CC-BY-3.0); train clips
  insert snippets of them as negatives when ``clips.real_speech.dirs`` points there
  (:mod:`seqflow.shards.real_speech`). The evaluation set ``real_speech_negatives`` uses the French
  and Italian packages only (:data:`TRAIN_PACKAGES` and the sets' packages are disjoint, tested).

A bank folder is written in a temporary sibling and renamed into place with a ``.complete`` marker,
so it is either absent or complete; a complete one is reused without touching the network.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from tqdm import tqdm

from seqflow.audio.io import AUDIO_SUFFIXES, read_audio
from seqflow.errors import AudioDecodeError
from seqflow.evalsets.debian import EvalDataUnavailable, extract, fetch_packages
from seqflow.evalsets.setfiles import SAMPLE_RATE, audio_name, write_flac
from seqflow.evalsets.sources import asterisk_items

log = logging.getLogger("seqflow.evalsets")
PACKAGE = "warmux-data"
FOLDERS = ("usr/share/games/warmux/sound/default/weapons", "usr/share/games/warmux/sound/default/misc",
           "usr/share/games/warmux/music")
SPEECH_PACKAGES = ("asterisk-core-sounds-es-wav", "asterisk-core-sounds-ru-wav")
TRAIN_PACKAGES = (PACKAGE, *SPEECH_PACKAGES)  # every package a train-only bank reads
DONE = ".complete"

Selector = Callable[[Path, str], list[Path]]  # (unpacked tree, package) -> audio files to convert


def _warmux_files(tree: Path, package: str) -> list[Path]:
    return sorted(f for d in FOLDERS for f in (tree / d).rglob("*") if f.suffix.lower() in AUDIO_SUFFIXES)


def _asterisk_files(tree: Path, package: str) -> list[Path]:
    """The prompts of every voice folder, without ``silence/`` and beeps (as the evaluation sets)."""
    return [item.path for item in asterisk_items(tree, package)]


def _convert(tree: Path, files: list[Path], out: Path, deb: Path, label: str, progress: bool) -> float:
    """Decode ``files`` (any rate/channels) to 16 kHz mono FLAC in a temporary sibling of ``out``,
    write ``.complete`` and swap it in. Returns the seconds written; undecodable files are logged
    and left out."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the bank is ordinary data
        bad, seconds = [], 0.0
        for f in tqdm(files, desc=f"{label}: converting", unit="file", disable=not progress):
            try:
                wav, _ = read_audio(f, target_sr=SAMPLE_RATE)
            except AudioDecodeError as e:
                bad.append(f"{e.path}: {e.reason}")
                continue
            seconds += write_flac(wav, tmp / audio_name(str(f.relative_to(tree))))[0]
        if bad:
            log.warning("%s: %d undecodable file(s) left out, first: %s", label, len(bad), bad[0])
        (tmp / DONE).write_text(f"{len(files) - len(bad)} files, {seconds:.1f} s from {deb.name}\n")
        if out.exists():  # an incomplete leftover (older builds wrote in place)
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"eval-data: {label}: {len(files) - len(bad)} files, {seconds / 3600:.3f} h -> {out}", flush=True)
    return seconds


def build_train_banks(root: Path, bank: str, packages: Mapping[str, Selector], what: str,
                      progress: bool = True) -> list[Path]:
    """Fetch, unpack and convert each package of ``packages`` into ``<root>/<bank>/<package>/``.

    Args:
        root: the eval-data folder (debs under ``debs/``, trees under ``pkgs/``).
        bank: ``train-noise`` or ``train-speech``.
        packages: ``{package: selector}``; the selector lists the audio files of the unpacked tree.
        what: words for the skip line (``training noise``).

    Returns:
        The complete bank folders, in ``packages`` order; those already complete are reused. When
        the packages cannot be obtained (no apt-get, no network) one line
        ``eval-data: <what> skipped (<reason>)`` is printed and only the complete ones are returned.
    """
    outs = {p: Path(root) / bank / p for p in packages}
    todo = [p for p, out in outs.items() if not (out / DONE).is_file()]
    if todo:
        try:
            debs = fetch_packages(todo, Path(root) / "debs")
            trees = {p: extract(debs[p], Path(root) / "pkgs" / p) for p in todo}
        except EvalDataUnavailable as e:
            print(f"eval-data: {what} skipped ({e})", flush=True)
            return [out for out in outs.values() if (out / DONE).is_file()]
        for p in todo:
            _convert(trees[p], packages[p](trees[p], p), outs[p], debs[p], f"{bank}/{p}", progress)
    return list(outs.values())


def build_train_noise(root: Path, progress: bool = True) -> Path | None:
    """``<root>/train-noise/warmux-data`` (see the module doc), or ``None`` (one printed line) when
    the package cannot be obtained."""
    built = build_train_banks(root, "train-noise", {PACKAGE: _warmux_files}, "training noise", progress)
    return built[0] if built else None


def build_train_speech(root: Path, progress: bool = True) -> list[Path]:
    """``<root>/train-speech/<package>`` for :data:`SPEECH_PACKAGES` (see the module doc); the
    complete folders, empty (one printed line) when the packages cannot be obtained."""
    return build_train_banks(root, "train-speech", dict.fromkeys(SPEECH_PACKAGES, _asterisk_files),
                             "training speech", progress)


def bank_seconds(folder: Path) -> float:
    """Seconds of audio a complete bank folder holds (from its ``.complete`` marker; 0.0 if none)."""
    marker = Path(folder) / DONE
    try:
        return float(marker.read_text().split(", ")[1].split(" s ")[0])
    except (OSError, IndexError, ValueError):
        return 0.0
