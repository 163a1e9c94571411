"""Build the real-audio evaluation sets from unpacked Debian package trees.

Sets (none of them ever feeds training):

* ``real_speech_negatives`` — human speech in other languages (Fish Fillets dialogue in Czech and
  Dutch, Asterisk prompts in French and Italian): false accepts per hour on real voices.
* ``real_noise`` — game sound effects and music (Colobot, LinCity-NG, alsa's noise burst).
* ``real_words_en`` — English words by real voices with transcripts (KTuberling, saytime,
  alsa-utils' channel names): ASR and trigger-word checks.

Each source file is decoded, down-mixed and resampled to 16 kHz mono, and written as FLAC under
``<out>/audio/``; files that fail to decode (or whose transcript cannot be normalised) are listed
in ``quarantine.jsonl`` with the reason. See :mod:`seqflow.evalsets.setfiles` for the layout and
:mod:`seqflow.evalsets.splits` for the dev/eval rule.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from seqflow.audio.io import read_audio
from seqflow.errors import AudioDecodeError
from seqflow.evalsets import sources as src
from seqflow.evalsets.setfiles import AUDIO_DIR, SAMPLE_RATE, SET_JSON, audio_name, read_set_json, write_flac, write_set
from seqflow.evalsets.splits import assign_splits
from seqflow.text.normalize import TextNormalizationError, normalize_text

log = logging.getLogger("seqflow.evalsets")
BUILDER_VERSION = 2  # bump when the rows a tree produces change (forces a rebuild of reused sets)


@dataclass(frozen=True)
class SetSpec:
    """A named set: what it measures and which scanner reads which package."""

    name: str
    kinds: tuple[str, ...]
    sources: tuple[tuple[str, src.Scanner], ...]

    @property
    def packages(self) -> list[str]:
        """Debian packages the set needs, each once, in order."""
        return list(dict.fromkeys(p for p, _ in self.sources))


SETS: dict[str, SetSpec] = {s.name: s for s in (
    SetSpec("real_speech_negatives", ("trigger_word",), (
        ("fillets-ng-data-cs", src.fillets_items), ("fillets-ng-data-nl", src.fillets_items),
        ("asterisk-core-sounds-fr-wav", src.asterisk_items), ("asterisk-core-sounds-it-wav", src.asterisk_items))),
    SetSpec("real_noise", ("trigger_word",), (
        ("colobot-common-sounds", src.colobot_items), ("lincity-ng-data", src.lincity_items),
        ("alsa-utils", src.alsa_noise_items))),
    SetSpec("real_words_en", ("asr", "trigger_word"), (
        ("ktuberling-data", src.ktuberling_items), ("saytime", src.saytime_items),
        ("alsa-utils", src.alsa_word_items))),
)}


@dataclass(frozen=True)
class Caps:
    """Limits per source (package × scanner) so builds stay quick; ``None`` keeps everything.

    Files are taken in key order, so a capped set is still deterministic.

    Attributes:
        max_files: at most this many files per source.
        max_seconds: stop adding a source's files once its kept audio reaches this many seconds.
    """

    max_files: int | None = None
    max_seconds: float | None = None


def _text(raw: str) -> str:
    return normalize_text(raw) if raw else ""


def build_set(name: str, pkg_roots: Mapping[str, Path], out_dir: Path, packages: Mapping[str, str],
              caps: Caps = Caps(), progress: bool = False, force: bool = False) -> Path:
    """Build (or reuse) one set folder from unpacked package trees.

    Args:
        name: one of :data:`SETS`.
        pkg_roots: ``{package: root of its unpacked tree}`` for every package of the set.
        out_dir: the set folder, e.g. ``eval-data/real_noise``.
        packages: ``{package: .deb file name}`` recorded in ``set.json``; a folder built from the
            same debs, caps and builder version is reused without decoding anything.
        caps: per-source limits.
        progress: show a tqdm bar.
        force: rebuild even if the folder matches.

    Returns:
        Path of ``manifest.jsonl``.

    Raises:
        KeyError: unknown set name, or a package of the set missing from ``pkg_roots``.
    """
    spec = SETS[name]
    out_dir = Path(out_dir)
    debs = {p: str(packages.get(p, "")) for p in spec.packages}
    build = {"version": BUILDER_VERSION, "debs": debs, "caps": asdict(caps)}
    meta = read_set_json(out_dir)
    if not force and meta is not None and meta.get("build") == build:
        log.info("%s: reusing %s (%d utterances, %.2f h)", name, out_dir, meta["num_utterances"], meta["hours"])
        return out_dir / "manifest.jsonl"

    (out_dir / SET_JSON).unlink(missing_ok=True)  # the folder is incomplete until set.json is back
    shutil.rmtree(out_dir / AUDIO_DIR, ignore_errors=True)
    items: list[src.SourceItem] = []
    for package, scan in spec.sources:
        found = scan(Path(pkg_roots[package]), package)
        if not found:
            log.warning("%s: no audio found for %s under %s", name, package, pkg_roots[package])
        items += found[: caps.max_files] if caps.max_files is not None else found

    rows, known, quarantine, kept_s = [], [], [], {}
    for it in tqdm(items, desc=name, unit="file", disable=not progress):
        if caps.max_seconds is not None and kept_s.get(it.source, 0.0) >= caps.max_seconds:
            continue
        try:
            text = _text(it.text)
            wav, _ = read_audio(it.path, target_sr=SAMPLE_RATE)
        except (AudioDecodeError, TextNormalizationError) as e:
            quarantine.append({"path": str(it.path), "key": it.key, "source": it.source,
                               "reason": getattr(e, "reason", type(e).__name__), "detail": str(e)})
            continue
        dest = (out_dir / AUDIO_DIR / audio_name(it.key)).resolve()
        duration, sha = write_flac(wav, dest)
        kept_s[it.source] = kept_s.get(it.source, 0.0) + duration
        known.append(it.speaker_known)
        rows.append({"audio_filepath": str(dest), "duration": duration, "text": text, "lang": it.lang,
                     "speaker": it.speaker, "source": it.source, "key": it.key, "audio_sha256": sha})

    splits = assign_splits([r["key"] for r in rows], [r["speaker"] if k else None for r, k in zip(rows, known)],
                           [r["duration"] for r in rows])
    for r, s in zip(rows, splits):
        r["split"] = s
    if quarantine:
        log.warning("%s: %d file(s) quarantined (see %s)", name, len(quarantine), out_dir / "quarantine.jsonl")
    manifest = write_set(out_dir, name=name, kinds=spec.kinds, packages=debs, rows=rows,
                         quarantine=quarantine, build=build)
    log.info("%s: %d utterances, %.2f h, %d quarantined", name, len(rows),
             sum(r["duration"] for r in rows) / 3600.0, len(quarantine))
    return manifest
