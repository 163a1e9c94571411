"""Find the audio files (and what is said in them) inside unpacked Debian package trees.

Each scanner takes the root of one unpacked package (the folder ``dpkg -x`` wrote, holding
``usr/...``) and its package name, and returns :class:`SourceItem` rows sorted by key. Scanners
only look at paths and small text files; decoding happens in :mod:`seqflow.evalsets.builders`.
A package tree without the expected folder yields no items (the builder logs it).

Transcripts here are raw English (``"the time is"``, ``"o'clock"``, ``"13"``); the builder
normalises them. ``""`` means unknown or not English.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SourceItem:
    """One audio file of a package and what is known about it.

    Attributes:
        path: the audio file in the unpacked tree.
        key: unique, stable id within a set: ``<package>/<path relative to the tree>`` without suffix.
        source: the Debian package name.
        text: raw English transcript, ``""`` when unknown or foreign.
        lang: ``en``, ``cs``, ``nl``, ``fr``, ``it``, or ``""`` for noise/music.
        speaker: speaker id when known, else a stand-in (package or file stem).
        speaker_known: whether ``speaker`` identifies a voice (then the split keeps it together).
    """

    path: Path
    key: str
    source: str
    text: str
    lang: str
    speaker: str
    speaker_known: bool


def _key(root: Path, package: str, path: Path) -> str:
    return f"{package}/{path.relative_to(root).with_suffix('').as_posix()}"


def _files(folder: Path, pattern: str) -> list[Path]:
    return sorted(p for p in folder.glob(pattern) if p.is_file()) if folder.is_dir() else []


# --- real speech in other languages --------------------------------------------------------------

FILLETS_FISH = {"m": "small-fish", "v": "big-fish"}  # the two heroes, one actor each per language


def fillets_speaker(level: str, stem: str) -> str:
    """Character of a Fish Fillets dialogue file ``[<level>-]<char>-<name>.ogg``.

    The two fish (``m`` small, ``v`` big) are the same actor in every level; any other character
    code is only trusted within its level (``<level>-<char>``).
    """
    for code, who in (("shout_small", "m"), ("shout_big", "v")):  # share/border/<lang>/sp-shout_big_00.ogg
        if code in stem:
            return FILLETS_FISH[who]
    tok = stem.split("-")
    if tok[0] in FILLETS_FISH:
        return FILLETS_FISH[tok[0]]
    if len(tok) >= 3:
        return FILLETS_FISH.get(tok[1], f"{level}-{tok[1]}")
    return f"{level}-{tok[0]}"


def fillets_items(root: Path, package: str) -> list[SourceItem]:
    """Fish Fillets NG dialogue: ``usr/share/games/fillets-ng/sound/<level>/<lang>/*.ogg`` and
    ``sound/share/<topic>/<lang>/*.ogg`` (jokes and shouts shared by all levels).

    ``lang`` comes from the package name (``fillets-ng-data-cs`` → ``cs``); speaker
    ``fillets-<lang>/<character>``; no transcript.
    """
    lang = package.rsplit("-", 1)[-1]
    out = []
    for p in _files(root / "usr/share/games/fillets-ng/sound", f"**/{lang}/*.ogg"):
        spk = f"fillets-{lang}/{fillets_speaker(p.parent.parent.name, p.stem)}"
        out.append(SourceItem(p, _key(root, package, p), package, "", lang, spk, True))
    return sorted(out, key=lambda i: i.key)


ASTERISK_NOT_SPEECH = {"beep", "beeperr", "ascending-2tone", "descending-2tone"}


def asterisk_items(root: Path, package: str) -> list[SourceItem]:
    """Asterisk prompts: ``usr/share/asterisk/sounds/<lang>_<REGION>_<sex>_<Name>/**/*.wav``.

    One speaker per voice folder (``fr_CA_f_June``); ``silence/`` and the beeps/tones are skipped.
    """
    out = []
    base = root / "usr/share/asterisk/sounds"
    for voice in sorted(d for d in base.glob("*_*") if d.is_dir()) if base.is_dir() else []:
        lang = voice.name.split("_")[0]
        for p in _files(voice, "**/*.wav"):
            rel = p.relative_to(voice)
            if rel.parts[0] == "silence" or p.stem in ASTERISK_NOT_SPEECH:
                continue
            out.append(SourceItem(p, _key(root, package, p), package, "", lang, f"asterisk/{voice.name}", True))
    return sorted(out, key=lambda i: i.key)


# --- English words ------------------------------------------------------------------------------

KTUBERLING_WORDS = {"sphynx": "sphinx", "fallingstar": "falling star", "moonwalker": "moon walker",
                    "brocolli": "broccoli", "palmtree": "palm tree"}  # sound name → what is said


def ktuberling_word(name: str) -> str:
    """Spoken word of a KTuberling sound name: scene prefix dropped (``egypt_camel`` → camel),
    run-together or misspelt names fixed (``moon_fallingstar`` → falling star)."""
    word = name.split("_", 1)[1] if "_" in name else name
    return KTUBERLING_WORDS.get(word, word.replace("_", " "))


def ktuberling_items(root: Path, package: str) -> list[SourceItem]:
    """KTuberling English words: ``usr/share/ktuberling/sounds/en.soundtheme`` lists
    ``<sound name=".." file="en/x.ogg"/>``; files not listed there are skipped (no known word).

    Raises:
        xml.etree.ElementTree.ParseError: the soundtheme file is not XML.
    """
    base = root / "usr/share/ktuberling/sounds"
    theme = base / "en.soundtheme"
    if not theme.is_file():
        return []
    out = []
    for el in ET.parse(theme).getroot().iter("sound"):
        name, rel = el.get("name"), el.get("file")
        if not name or not rel:
            continue
        p = base / rel
        out.append(SourceItem(p, _key(root, package, p), package, ktuberling_word(name), "en", package, False))
    return sorted(out, key=lambda i: i.key)


SAYTIME_WORDS = {"the_time_is": "the time is", "oclock": "o'clock", "am": "a.m.", "pm": "p.m."}


def saytime_items(root: Path, package: str) -> list[SourceItem]:
    """saytime's clock words: ``usr/share/saytime/*.au`` (8 kHz μ-law); ``13.au`` says 13,
    ``the_time_is.au`` "the time is", ``oclock.au`` "o'clock", ``am.au`` "a.m."."""
    out = []
    for p in _files(root / "usr/share/saytime", "*.au"):
        text = SAYTIME_WORDS.get(p.stem, p.stem.replace("_", " "))
        out.append(SourceItem(p, _key(root, package, p), package, text, "en", package, False))
    return out


ALSA_NOISE = {"Noise"}


def alsa_word_items(root: Path, package: str) -> list[SourceItem]:
    """alsa-utils speaker-test prompts: ``usr/share/sounds/alsa/Front_Left.wav`` says "front
    left"; ``Noise.wav`` is noise (see :func:`alsa_noise_items`)."""
    return [SourceItem(p, _key(root, package, p), package, p.stem.replace("_", " ").lower(), "en", package, False)
            for p in _files(root / "usr/share/sounds/alsa", "*.wav") if p.stem not in ALSA_NOISE]


# --- noise and music ----------------------------------------------------------------------------

def _noise(root: Path, package: str, paths: list[Path]) -> list[SourceItem]:
    return sorted((SourceItem(p, _key(root, package, p), package, "", "", p.stem, False) for p in paths),
                  key=lambda i: i.key)


def alsa_noise_items(root: Path, package: str) -> list[SourceItem]:
    """alsa-utils ``usr/share/sounds/alsa/Noise.wav`` (the speaker-test noise burst)."""
    return _noise(root, package, [p for p in _files(root / "usr/share/sounds/alsa", "*.wav") if p.stem in ALSA_NOISE])


def colobot_items(root: Path, package: str) -> list[SourceItem]:
    """Colobot sound effects (``usr/share/games/colobot/sounds/*.wav``) and music (``music/*.ogg``)."""
    base = root / "usr/share/games/colobot"
    return _noise(root, package, _files(base / "sounds", "*.wav") + _files(base / "music", "*.ogg"))


def lincity_items(root: Path, package: str) -> list[SourceItem]:
    """LinCity-NG sound effects (``usr/share/games/lincity-ng/sounds/*.wav``) and music
    (``music/**/*.ogg``)."""
    base = root / "usr/share/games/lincity-ng"
    return _noise(root, package, _files(base / "sounds", "*.wav") + _files(base / "music", "**/*.ogg"))


Scanner = Callable[[Path, str], list[SourceItem]]
