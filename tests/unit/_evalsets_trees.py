"""Tiny FAKE unpacked Debian package trees with real audio (soundfile), for the evalsets tests.

They mimic the layout of the real packages (paths, file types, sample rates) but hold
fractions of a second of tones: the tests never touch the real downloads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf


def tone(path: Path, sr: int = 16000, seconds: float = 0.3, channels: int = 1, seed: int = 0, **kw) -> Path:
    """A valid, non-silent audio file (format from the suffix unless ``format=`` is given)."""
    t = np.arange(int(round(sr * seconds))) / sr
    wav = 0.3 * np.sin(2 * np.pi * (200 + 37 * seed) * t) + 0.01 * np.random.default_rng(seed).standard_normal(t.size)
    if channels == 2:
        wav = np.stack([wav, 0.5 * wav], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wav.astype(np.float32), sr, **kw)
    return path


def corrupt(path: Path) -> Path:
    """Garbage bytes under an audio name (use .ogg/.wav/.flac: libsndfile reads a headerless .au as raw μ-law)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not audio at all" * 10)
    return path


def fillets(root: Path, lang: str = "cs") -> Path:
    """``usr/share/games/fillets-ng/sound/<level>/<lang>/*.ogg``: both fish and minor characters."""
    base = root / "usr/share/games/fillets-ng/sound"
    names = {"city": ["vit-hs-demoni0", "vit-m-hlava", "vit-v-hlava", "vit-m-jak"],
             "rush": ["m-obdivovat", "v-chytra", "v-zopakuje"],
             "gods": ["b1-spletl", "b2-rikal2"],
             "share/border": ["sp-shout_big_00", "cil-m-hlaska1"]}
    i = 0
    for level, stems in names.items():
        for stem in stems:
            tone(base / level / lang / f"{stem}.ogg", sr=22050, seconds=0.2 + 0.05 * i, seed=i)
            i += 1
    return root


def asterisk(root: Path, voice: str = "fr_CA_f_June") -> Path:
    """``usr/share/asterisk/sounds/<voice>/`` with prompts, digits, a beep and silence/ (8 kHz)."""
    base = root / "usr/share/asterisk/sounds" / voice
    for i, rel in enumerate(["activated.wav", "goodbye.wav", "digits/1.wav", "beep.wav", "silence/1.wav"]):
        tone(base / rel, sr=8000, seed=i)
    return root


def ktuberling(root: Path, extra_unlisted: bool = True) -> Path:
    """``usr/share/ktuberling/sounds/en/*.ogg`` + ``en.soundtheme`` (2 listed words, 1 unlisted)."""
    base = root / "usr/share/ktuberling/sounds"
    tone(base / "en/egypt_camel.ogg", sr=44100, channels=2, seed=1)
    tone(base / "en/moon_fallingstar.ogg", sr=44100, channels=2, seed=2)
    if extra_unlisted:
        tone(base / "en/tv_tree.ogg", sr=44100, channels=2, seed=3)
    (base / "en.soundtheme").write_text(
        '<language code="en">\n'
        '    <sound name="egypt_camel" file="en/egypt_camel.ogg" />\n'
        '    <sound name="moon_fallingstar" file="en/moon_fallingstar.ogg" />\n'
        "</language>\n")
    return root


def saytime(root: Path) -> Path:
    """``usr/share/saytime/*.au``: 8 kHz μ-law like the real ones."""
    base = root / "usr/share/saytime"
    for i, stem in enumerate(["13", "the_time_is", "oclock", "am"]):
        tone(base / f"{stem}.au", sr=8000, seed=i, format="AU", subtype="ULAW")
    return root


def alsa(root: Path) -> Path:
    """``usr/share/sounds/alsa/``: two channel names and the noise burst (48 kHz)."""
    base = root / "usr/share/sounds/alsa"
    for i, stem in enumerate(["Front_Left", "Rear_Center", "Noise"]):
        tone(base / f"{stem}.wav", sr=48000, seed=i)
    return root


def colobot(root: Path) -> Path:
    base = root / "usr/share/games/colobot"
    tone(base / "sounds/sound000.wav", sr=22050, seed=1, subtype="PCM_U8")
    tone(base / "sounds/sound001.wav", sr=44100, seed=2)
    tone(base / "music/Intro1.ogg", sr=44100, channels=2, seconds=1.0, seed=3)
    return root


def lincity(root: Path) -> Path:
    base = root / "usr/share/games/lincity-ng"
    tone(base / "sounds/Farm1.wav", sr=11025, seed=4)
    tone(base / "music/default/01.ogg", sr=44100, channels=2, seconds=0.8, seed=5)
    return root


def all_trees(base: Path) -> dict[str, Path]:
    """Every package the real sets read, as fake trees under ``base/<package>``."""
    return {
        "fillets-ng-data-cs": fillets(base / "fillets-ng-data-cs", "cs"),
        "fillets-ng-data-nl": fillets(base / "fillets-ng-data-nl", "nl"),
        "asterisk-core-sounds-fr-wav": asterisk(base / "asterisk-core-sounds-fr-wav", "fr_CA_f_June"),
        "asterisk-core-sounds-it-wav": asterisk(base / "asterisk-core-sounds-it-wav", "it_IT_m_Carlo"),
        "colobot-common-sounds": colobot(base / "colobot-common-sounds"),
        "lincity-ng-data": lincity(base / "lincity-ng-data"),
        "ktuberling-data": ktuberling(base / "ktuberling-data"),
        "saytime": saytime(base / "saytime"),
        "alsa-utils": alsa(base / "alsa-utils"),
    }


def debs_for(trees: dict[str, Path]) -> dict[str, str]:
    """Fake ``{package: .deb file name}`` as recorded in set.json."""
    return {p: f"{p}_1.0-1_all.deb" for p in trees}
