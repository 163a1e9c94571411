"""The held-out TTS engine: festival renders evaluation utterances, never training data.

Training data comes from other engines (espeak-ng, Piper); festival's voices are only ever heard
at evaluation, so a model cannot have fit them. Three voices are cycled over the items in order:
``voice_kal_diphone`` and ``voice_ked_diphone`` (CSTR diphone, US male) and
``voice_cmu_us_slt_arctic_hts`` (CMU ARCTIC SLT, HTS, US female).

Where festival comes from: an installed ``festival`` with the three voices under
``/usr/share/festival`` is used as it is; otherwise the Debian packages (festival, its
``libestools2.5``, the lexicons and voices, and the shared libraries a minimal image lacks) are
fetched with :mod:`seqflow.evalsets.debian` into ``<eval_data_root>/debs`` and unpacked into
``<eval_data_root>/festival/root``. That private copy runs as::

    LD_LIBRARY_PATH=<root>/usr/lib/x86_64-linux-gnu[:…/pulseaudio] \\
        <root>/usr/bin/festival --libdir <root>/usr/share/festival \\
                                --datadir <root>/usr/share/festival -b script.scm

(``--libdir`` alone is not enough: Debian's build looks for ``init.scm`` in the data dir).
``script.scm`` selects a voice and saves each utterance with
``(utt.save.wave (utt.synth (Utterance Text "…")) "out.wav" 'riff)``; ``SayText`` and
``text2wave`` are not used (the first plays audio, the second's options clash with festival's).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

from tqdm import tqdm

from seqflow.audio.io import read_audio
from seqflow.data.tts import is_phoneme_text
from seqflow.errors import AudioDecodeError
from seqflow.evalsets.debian import EvalDataUnavailable, extract, fetch_packages, is_installed
from seqflow.evalsets.setfiles import AUDIO_DIR, SAMPLE_RATE, audio_name, read_set_json, write_flac, write_set
from seqflow.evalsets.splits import hash_split
from seqflow.text.normalize import TextNormalizationError, normalize_text

log = logging.getLogger("seqflow.evalsets")
VOICES = ("voice_kal_diphone", "voice_ked_diphone", "voice_cmu_us_slt_arctic_hts")
VOICE_DIRS = ("english/kal_diphone", "english/ked_diphone", "us/cmu_us_slt_arctic_hts")
FESTIVAL_PACKAGES = ("festival", "libestools2.5", "festlex-cmu", "festlex-poslex",
                     "festvox-kallpc16k", "festvox-kdlpc16k", "festvox-us-slt-hts")
# libestools2.5 → libpulse0 → libsndfile1 → codecs: fetched only when not installed here
RUNTIME_LIB_PACKAGES = ("libpulse0", "libasyncns0", "libsndfile1", "libflac12", "libogg0", "libvorbis0a",
                        "libvorbisenc2", "libopus0", "libmpg123-0", "libmp3lame0")
KINDS = ("asr", "trigger_word")


class RenderJob(NamedTuple):
    """Render ``text`` with festival voice function ``voice`` into the WAV file ``wav_path``."""

    text: str
    voice: str
    wav_path: str


Renderer = Callable[[Sequence[RenderJob]], None]
"""Writes every job's ``wav_path`` (any format soundfile reads); may raise; a missing file is a failure."""


@dataclass(frozen=True)
class FestivalRuntime:
    """How to start festival: ``binary`` + ``args`` + ``-b script``, with ``env`` added;
    ``packages``: ``(package, .deb file name or "installed")`` it came from."""

    binary: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    packages: tuple[tuple[str, str], ...] = ()


def _scheme_string(s: str) -> str:
    return '"' + " ".join(s.split()).replace("\\", "\\\\").replace('"', '\\"') + '"'


def festival_render(runtime: FestivalRuntime, jobs: Sequence[RenderJob], timeout_s: float = 60.0) -> None:
    """Render jobs with one festival process (voices switched as needed, in job order).

    Raises:
        RuntimeError: festival exited non-zero or timed out (its last stderr line).
    """
    lines, voice = [], None
    for j in jobs:
        if j.voice != voice:
            lines.append(f"({j.voice})")
            voice = j.voice
        lines.append(f"(utt.save.wave (utt.synth (Utterance Text {_scheme_string(j.text)})) "
                     f"{_scheme_string(j.wav_path)} 'riff)")
    with tempfile.TemporaryDirectory(prefix="seqflow-festival-") as tmp:
        script = Path(tmp) / "render.scm"
        script.write_text("\n".join(lines) + "\n", encoding="utf-8")
        try:
            r = subprocess.run([runtime.binary, *runtime.args, "-b", str(script)], capture_output=True, text=True,
                               env={**os.environ, **dict(runtime.env)}, timeout=timeout_s + 5 * len(jobs))
        except subprocess.TimeoutExpired as e:
            raise RuntimeError(f"festival timed out after {e.timeout:.0f} s") from e
    if r.returncode != 0:
        err = [ln for ln in (r.stderr + r.stdout).splitlines() if ln.strip()]
        raise RuntimeError(f"festival exited {r.returncode}: {(err or ['no output'])[-1][:200]}")


def _lib_dirs(root: Path) -> list[str]:
    dirs = {p.parent for base in (root / "usr/lib", root / "lib") if base.is_dir() for p in base.rglob("*.so*")}
    return sorted(str(d) for d in dirs)


def obtain_festival(eval_data_root: Path) -> FestivalRuntime:
    """An installed festival with the three voices, else a private copy from Debian packages.

    Raises:
        EvalDataUnavailable: packages cannot be fetched/unpacked, or festival cannot start here
            (e.g. a shared library is missing).
    """
    system = shutil.which("festival")
    if system and all((Path("/usr/share/festival/voices") / v).is_dir() for v in VOICE_DIRS):
        return FestivalRuntime(system, packages=(("festival", "installed"),))
    root = Path(eval_data_root) / "festival" / "root"
    names = list(FESTIVAL_PACKAGES) + [p for p in RUNTIME_LIB_PACKAGES if not is_installed(p)]
    debs = fetch_packages(names, Path(eval_data_root) / "debs")
    extract([debs[n] for n in names], root)
    binary, share = root / "usr/bin/festival", root / "usr/share/festival"
    missing = [v for v in VOICE_DIRS if not (share / "voices" / v).is_dir()]
    if not binary.is_file() or missing:
        raise EvalDataUnavailable(f"festival tree {root} lacks {'the binary' if not binary.is_file() else missing}")
    libpath = ":".join(_lib_dirs(root) + [p for p in [os.environ.get("LD_LIBRARY_PATH", "")] if p])
    rt = FestivalRuntime(str(binary), ("--libdir", str(share), "--datadir", str(share)),
                         (("LD_LIBRARY_PATH", libpath),), tuple((n, debs[n].name) for n in names))
    r = subprocess.run([rt.binary, "--version"], capture_output=True, text=True, env={**os.environ, **dict(rt.env)})
    if r.returncode != 0:
        err = [ln for ln in (r.stderr + r.stdout).splitlines() if ln.strip()]
        raise EvalDataUnavailable(f"festival from {root} does not start: {(err or ['no output'])[-1][:200]}")
    return rt


def _render_chunk(renderer: Renderer, chunk: list[tuple[str, RenderJob]], audio_dir: str) -> list[dict[str, Any]]:
    """Render a chunk (retrying failures one by one), convert to 16 kHz FLAC; a result per job:
    ``{"key", "duration", "audio_sha256", "audio_filepath"}`` or ``{"key", "reason", "detail"}``."""
    errors: dict[str, str] = {}
    try:
        renderer([j for _, j in chunk])
    except Exception as e:  # noqa: BLE001 - any renderer failure is retried per job below
        errors = {k: str(e) for k, _ in chunk}
    if len(chunk) > 1:
        for k, j in chunk:
            if not Path(j.wav_path).is_file():
                try:
                    renderer([j])
                    errors.pop(k, None)
                except Exception as e:  # noqa: BLE001
                    errors[k] = str(e)
    out = []
    for k, j in chunk:
        try:
            wav, _ = read_audio(j.wav_path, target_sr=SAMPLE_RATE)
            dest = Path(audio_dir) / audio_name(k)
            duration, sha = write_flac(wav, dest)
            out.append({"key": k, "duration": duration, "audio_sha256": sha, "audio_filepath": str(dest)})
        except AudioDecodeError as e:
            out.append({"key": k, "reason": "render_failed" if e.reason == "missing" else e.reason,
                        "detail": errors.get(k) or str(e)})
        finally:
            Path(j.wav_path).unlink(missing_ok=True)
    return out


def items_sha256(items: Sequence[tuple[str, str]]) -> str:
    """sha256 of the ``(key, text)`` items and the voice cycle: equal hash → equal set."""
    return hashlib.sha256(json.dumps({"items": [list(i) for i in items], "voices": VOICES}).encode()).hexdigest()


def build_heldout_engine(out_dir: Path, items: Sequence[tuple[str, str]], eval_data_root: Path,
                         renderer: Renderer | None = None, workers: int = 2, chunk_size: int = 8,
                         progress: bool = True, name: str | None = None) -> Path:
    """Render ``(key, text)`` items with festival into an evaluation set folder.

    Item ``i`` uses voice ``VOICES[i % 3]``; rows get ``lang "en"``, ``speaker`` the voice name
    (``kal_diphone``…), ``source "festival"``, ``split`` by crc32 of the key, ``text`` the
    normalised text. Items whose text cannot be normalised, is espeak-ng phoneme mnemonics
    (``[[...]]``, reason ``phoneme_text``: festival reads words), or whose render fails, are listed
    in ``quarantine.jsonl``. A folder whose ``set.json`` records the same items (and renderer) is
    returned as it is, without touching festival.

    Args:
        out_dir: the set folder (``manifest.jsonl``, ``audio/``, ``set.json``, ``quarantine.jsonl``).
        items: unique keys and English texts.
        eval_data_root: where Debian packages are fetched/unpacked (``debs/``, ``festival/root``).
        renderer: replaces festival (tests); default :func:`festival_render` on :func:`obtain_festival`.
        workers: render processes (``<= 1``: in this process).
        chunk_size: jobs per festival process start.
        progress: show a tqdm bar.
        name: the set name in ``set.json`` (default: the folder name).

    Returns:
        Path of ``manifest.jsonl``.

    Raises:
        ValueError: duplicate keys.
        EvalDataUnavailable: festival cannot be obtained, or no item rendered at all.
    """
    out_dir = Path(out_dir)
    keys = [k for k, _ in items]
    if len(set(keys)) != len(keys):
        raise ValueError("build_heldout_engine: item keys must be unique")
    engine = "festival" if renderer is None else getattr(renderer, "__qualname__", type(renderer).__name__)
    build = {"items_sha256": items_sha256(items), "engine": engine}
    meta = read_set_json(out_dir)
    if meta is not None and meta.get("build") == build:
        log.info("held-out TTS: reusing %s (%d utterances)", out_dir, meta["num_utterances"])
        return out_dir / "manifest.jsonl"
    packages: dict[str, str] = {}
    if renderer is None:
        runtime = obtain_festival(Path(eval_data_root))
        renderer, packages = partial(festival_render, runtime), dict(runtime.packages)

    (out_dir / "set.json").unlink(missing_ok=True)
    shutil.rmtree(out_dir / AUDIO_DIR, ignore_errors=True)
    (out_dir / AUDIO_DIR).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir, prefix=".render-"))
    quarantine, meta_of, jobs = [], {}, []
    for i, (key, text) in enumerate(items):
        voice = VOICES[i % len(VOICES)]
        if is_phoneme_text(text):  # normalize_text would make letters of it: festival reads words only
            quarantine.append({"key": key, "text": text, "voice": voice, "reason": "phoneme_text",
                               "detail": "espeak-ng phoneme mnemonics in [[...]]; festival reads English words"})
            continue
        try:
            norm = normalize_text(text)
        except TextNormalizationError as e:
            quarantine.append({"key": key, "text": text, "voice": voice, "reason": e.reason, "detail": str(e)})
            continue
        meta_of[key] = (norm, voice)
        jobs.append((key, RenderJob(text, voice, str(tmp / f"{i:07d}.wav"))))
    chunks = [jobs[i:i + chunk_size] for i in range(0, len(jobs), chunk_size)]
    audio_dir = str((out_dir / AUDIO_DIR).resolve())
    results: list[dict[str, Any]] = []
    bar = tqdm(total=len(jobs), desc="festival", unit="utt", disable=not progress)
    try:
        if workers <= 1:
            for c in chunks:
                results += _render_chunk(renderer, c, audio_dir)
                bar.update(len(c))
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for c, res in zip(chunks, pool.map(_render_chunk, [renderer] * len(chunks), chunks,
                                                   [audio_dir] * len(chunks))):
                    results += res
                    bar.update(len(c))
    finally:
        bar.close()
        shutil.rmtree(tmp, ignore_errors=True)

    rows = []
    for r in results:
        norm, voice = meta_of[r["key"]]
        if "reason" in r:
            quarantine.append({"key": r["key"], "text": norm, "voice": voice, "reason": r["reason"],
                               "detail": r["detail"]})
            continue
        rows.append({**r, "text": norm, "lang": "en", "speaker": voice.removeprefix("voice_"),
                     "source": "festival", "split": hash_split(r["key"])})
    if jobs and not rows:
        raise EvalDataUnavailable(f"festival rendered none of {len(jobs)} items: {quarantine[-1]['detail'][:200]}")
    if quarantine:
        log.warning("held-out TTS: %d item(s) quarantined (see %s)", len(quarantine), out_dir / "quarantine.jsonl")
    return write_set(out_dir, name=name or out_dir.name, kinds=KINDS, packages=packages,
                     rows=rows, quarantine=quarantine, build=build)

