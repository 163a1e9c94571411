"""Offline text-to-speech with espeak-ng, in-process through ctypes (``espeakng-loader`` wheel).

The wheel bundles ``libespeak-ng`` and its data, so nothing is installed system-wide and nothing
is downloaded. espeak-ng is a process-wide C library that is not thread-safe: :class:`EspeakTTS`
is a singleton and every call takes one lock.

Determinism: espeak keeps synthesis state between calls (pitch-flutter phase, gain control,
random noise generator), so a render depends on the renders before it. :meth:`EspeakTTS.reset`
unloads and reloads the library, which restores every static variable, and seeds its noise
generator; after ``reset()`` the same sequence of calls gives the same samples, byte for byte.

Phoneme input: text may hold espeak-ng's ASCII phoneme mnemonics between ``[[`` and ``]]``
(``"[[h'eI dZ'A@vIz]]"``: a pronunciation no English word has), rendered as written
(``espeakPHONEMES``, passed on every synthesis; plain text renders byte for byte as without it).
:meth:`EspeakTTS.phonemes` reads such blocks too, so they phonemize back to IPA, and gives the
mnemonics of any text with ``ipa=False``. Engines that read words (festival) cannot read them:
test with :func:`is_phoneme_text`.

>>> tts = EspeakTTS()
>>> wav, sr = tts.render("activate", voice="en-us+f3")   # (S,) float32 at 22050 Hz
>>> tts.phonemes("activate")
'ˈæ_k_t_ᵻ_v_ˌeɪ_t'
"""

from __future__ import annotations

import _ctypes
import ctypes
import hashlib
import logging
import threading
from pathlib import Path

import numpy as np

from seqflow.errors import ConfigError

log = logging.getLogger(__name__)

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_CHARS_UTF8 = 1
_PARAM_RATE, _PARAM_PITCH = 1, 3
_PHONEMES_IPA = 0x02
_PHONEME_INPUT = 0x100  # espeakPHONEMES: [[...]] in the text holds phoneme mnemonics
PHONEME_SEP = "_"  # separator between phonemes in :meth:`EspeakTTS.phonemes`; words split by " "
_PROBE_TEXT = "a"



def is_phoneme_text(text: str) -> bool:
    """True when ``text`` holds espeak-ng phoneme mnemonics in ``[[...]]`` (e.g. ``"[['aktI#v]]"``).

    espeak-ng renders such text (and :class:`seqflow.data.piper_tts.PiperTTS` after converting it
    to IPA); an engine that reads English words, such as festival, cannot.
    """
    s = str(text)
    return "[[" in s and "]]" in s.split("[[", 1)[1]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class _Voice(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


def trim_silence(wav: np.ndarray, sample_rate: int, threshold_db: float = -40.0, pad_s: float = 0.01) -> np.ndarray:
    """Cut leading and trailing silence with a frame-energy threshold.

    Args:
        wav: ``(S,)`` float32 samples.
        sample_rate: [Hz].
        threshold_db: a 5 ms frame is speech when its RMS is within this many dB of the loudest frame.
        pad_s: keep this much audio [s] before the first and after the last speech frame.

    Returns:
        ``(S',)`` view of ``wav`` (empty when ``wav`` is all zeros).
    """
    hop = max(1, int(0.005 * sample_rate))
    n = len(wav) // hop
    if n == 0:
        return wav
    frames = wav[: n * hop].astype(np.float64).reshape(n, hop)
    rms = np.sqrt((frames**2).mean(axis=1))
    peak = rms.max()
    if peak <= 0:
        return wav[:0]
    active = np.nonzero(rms >= max(peak * 10 ** (threshold_db / 20), 1e-5))[0]
    pad = int(pad_s * sample_rate)
    start = max(0, active[0] * hop - pad)
    end = min(len(wav), (active[-1] + 1) * hop + pad)
    return wav[start:end]


class EspeakTTS:
    """espeak-ng synthesizer (process-wide singleton; all calls serialised by a lock).

    Voice names are ``"<accent>"`` or ``"<accent>+<variant>"``, e.g. ``"en-us+f3"``,
    ``"en-gb-scotland+m1"``; accents are espeak language codes (lower case), variants the
    files in ``espeak-ng-data/voices/!v`` (``m1``…``m7``, ``f1``…``f5``, ``klatt``, …).
    """

    _instance: "EspeakTTS | None" = None
    _lock = threading.RLock()

    def __new__(cls) -> "EspeakTTS":
        with cls._lock:
            if cls._instance is None:
                inst = super().__new__(cls)
                inst._setup()
                cls._instance = inst
            return cls._instance

    # -- library lifecycle -------------------------------------------------------------------
    def _setup(self) -> None:
        import espeakng_loader

        self._lib_path = espeakng_loader.get_library_path()
        self._data_path = espeakng_loader.get_data_path()
        self._lib: ctypes.CDLL | None = None
        self._chunks: list[np.ndarray] = []

        def _collect(wav, n, _events):  # called by espeak_Synth in this thread
            if n > 0 and wav:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        self._callback = _CALLBACK(_collect)  # keep a reference: espeak holds the pointer
        self._probe_digests: dict[int, str] = {}
        self._load(seed=0)
        self._accents = self._list_accents()
        vdir = Path(self._data_path) / "voices" / "!v"
        self._variants = {p.name.lower(): p.name for p in sorted(vdir.iterdir()) if p.is_file() and " " not in p.name}

    def _load(self, seed: int) -> None:
        lib = ctypes.CDLL(self._lib_path)
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                     ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
        lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
        lib.espeak_Info.restype = ctypes.c_char_p
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        sr = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, self._data_path.encode(), 0)
        if sr <= 0:
            raise RuntimeError(f"espeak_Initialize failed ({self._lib_path}, data {self._data_path})")
        lib.espeak_SetSynthCallback(self._callback)
        self._lib, self.sample_rate, self._current = lib, int(sr), None
        self.version = lib.espeak_Info(None).decode()
        lib.espeak_ng_SetRandSeed(int(seed))
        probe = self._synth(_PROBE_TEXT, "gmw/en-US", 175, 50)
        digest = hashlib.sha256(probe.tobytes()).hexdigest()
        if self._probe_digests.setdefault(int(seed), digest) != digest:
            log.warning("espeak-ng state was not reset (the library is loaded elsewhere in this "
                        "process); renders may not be byte-reproducible")

    def reset(self, seed: int = 0) -> None:
        """Reload espeak-ng so the following renders do not depend on earlier ones.

        Unloads the library (``dlclose``) and loads it again, which resets its internal state,
        then seeds its noise generator with ``seed``. Costs about 10 ms.
        """
        with self._lock:
            assert self._lib is not None
            self._lib.espeak_Terminate()
            _ctypes.dlclose(self._lib._handle)
            self._lib = None
            self._load(seed)

    # -- voices --------------------------------------------------------------------------------
    def _list_accents(self) -> dict[str, str]:
        voices = self._lib.espeak_ListVoices(None)
        out: dict[str, str] = {}
        i = 0
        while voices[i]:
            v = voices[i].contents
            langs = ctypes.string_at(v.languages, 256)  # (priority byte, name, NUL)* then NUL
            first = langs[1: langs.index(b"\0", 1)].decode().lower()
            out.setdefault(first, v.identifier.decode())
            i += 1
        return dict(sorted(out.items()))

    def accents(self, prefix: str = "") -> list[str]:
        """espeak language codes (lower case) starting with ``prefix``, e.g. ``accents("en")``."""
        return [a for a in self._accents if a.startswith(prefix)]

    def variants(self) -> list[str]:
        """Voice variant names usable after ``+`` (``m1``, ``f3``, ``klatt``, ...)."""
        return list(self._variants.values())

    def voices(self) -> list[str]:
        """Every base voice name (accent); combine with :meth:`variants` as ``accent+variant``."""
        return list(self._accents)

    def check_voice(self, voice: str) -> tuple[str, str]:
        """Split and validate ``"accent[+variant]"``.

        Raises:
            ConfigError: unknown accent or variant; the message lists the valid ones.
        """
        accent, _, variant = voice.strip().lower().partition("+")
        variant = variant.strip()
        if accent not in self._accents:
            raise ConfigError(f"unknown TTS voice {voice!r}: accent {accent!r} is not an espeak-ng voice; "
                              f"valid English accents: {', '.join(self.accents('en'))}")
        if variant and variant not in self._variants:
            raise ConfigError(f"unknown TTS voice {voice!r}: variant {variant!r} is not an espeak-ng variant; "
                              f"valid variants: {', '.join(self._variants.values())}")
        return accent, self._variants.get(variant, "")

    # -- synthesis -----------------------------------------------------------------------------
    def _espeak_name(self, voice: str) -> str:
        accent, variant = self.check_voice(voice)
        return self._accents[accent] + (f"+{variant}" if variant else "")

    def _set_voice(self, name: str) -> None:
        if name != self._current:  # loading a voice costs ~0.3 ms: only when it changes
            if self._lib.espeak_SetVoiceByName(name.encode()) != 0:
                raise ConfigError(f"espeak-ng could not load voice {name!r}")
            self._current = name

    def _synth(self, text: str, name: str, rate_wpm: int, pitch: int) -> np.ndarray:
        lib = self._lib
        self._set_voice(name)
        lib.espeak_SetParameter(_PARAM_RATE, int(rate_wpm), 0)
        lib.espeak_SetParameter(_PARAM_PITCH, int(pitch), 0)
        data = text.encode("utf-8")
        self._chunks = []
        lib.espeak_Synth(data, len(data) + 1, 0, 0, 0, _CHARS_UTF8 | _PHONEME_INPUT, None, None)
        lib.espeak_Synchronize()
        chunks, self._chunks = self._chunks, []
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)

    def render(self, text: str, voice: str = "en-us+f3", rate_wpm: int = 175, pitch: int = 50,
               trim: bool = True) -> tuple[np.ndarray, int]:
        """Synthesize ``text``.

        Args:
            text: words to speak (UTF-8); ``[[...]]`` blocks are phoneme mnemonics (module docstring).
            voice: ``"accent+variant"``, e.g. ``"en-us+f3"``.
            rate_wpm: speaking rate [words per minute], espeak accepts 80–450.
            pitch: base pitch 0–100 (50 is the voice's normal pitch).
            trim: cut leading/trailing silence (see :func:`trim_silence`) so the returned audio
                starts and ends at the word boundaries (±10 ms).

        Returns:
            ``(samples, sample_rate)``: ``(S,)`` float32 in [-1, 1] at :attr:`sample_rate` (22050 Hz).

        Raises:
            ConfigError: unknown voice.
        """
        name = self._espeak_name(voice)
        with self._lock:
            pcm = self._synth(text, name, rate_wpm, pitch)
        wav = pcm.astype(np.float32) / 32768.0
        if trim:
            wav = trim_silence(wav, self.sample_rate)
        return np.ascontiguousarray(wav), self.sample_rate

    def phonemes(self, text: str, voice: str = "en-us", ipa: bool = True) -> str:
        """Phonemes of ``text``: phonemes joined by ``"_"``, words by ``" "``, stress marks kept.

        Args:
            text: words, or phoneme mnemonics in ``[[...]]`` (read as written).
            voice: accent whose pronunciations are used (a ``+variant`` is ignored).
            ipa: IPA symbols; ``False``: espeak-ng's ASCII mnemonics (what ``[[...]]`` input takes),
                one for each IPA phoneme, in the same positions.

        Raises:
            ConfigError: unknown accent.

        >>> EspeakTTS().phonemes("hey jarvis")
        'h_ˈeɪ dʒ_ˈɑːɹ_v_ɪ_s'
        >>> EspeakTTS().phonemes("hey jarvis", ipa=False)
        "h_'eI dZ_'A@_v_I_s"
        >>> EspeakTTS().phonemes("[[h'eI dZ'A@vIz]]")
        'h_ˈeɪ dʒ_ˈɑːɹ_v_ɪ_z'
        """
        name = self._espeak_name(voice.partition("+")[0])
        out = []
        with self._lock:
            self._set_voice(name)
            buf = ctypes.create_string_buffer(text.encode("utf-8"))
            ptr = ctypes.c_void_p(ctypes.addressof(buf))
            mode = (_PHONEMES_IPA if ipa else 0) | (ord(PHONEME_SEP) << 8)
            while ptr.value:  # one clause per call; espeak advances ptr, NULL at the end
                res = self._lib.espeak_TextToPhonemes(ctypes.byref(ptr), _CHARS_UTF8, mode)
                if res:
                    out.append(res.decode("utf-8").strip())
        return " ".join(" ".join(p for p in out if p).split())
