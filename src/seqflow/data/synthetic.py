"""The ``synthetic`` data source: a trigger-word and sentence corpus rendered offline with espeak-ng
and, for train and val, the neural Piper engine (:mod:`seqflow.data.piper_tts`).

Output under ``cfg.data.root`` (see ``conf/data/synthetic.yaml`` for every key)::

    audio/<split>/positive/<split>-positive-000000.flac     the trigger word, one voice/rate/pitch each
    audio/<split>/negative/<split>-negative-000000.flac     sound-alikes, user words, common words
    audio/<split>/background/<split>-background-pink-000000.flac   generated noise (16 kHz FLAC)
    audio/<split>/utterance/<split>-utterance-000000.flac     sentences for speech recognition
    audio/<split>/<kind>/<split>-<kind>-piper-joe-000000.flac  Piper renders (train/val; kind positive,
                                                             negative or utterance; speaker piper:joe)
    background/user/0000-<name>                              byte copies of files in data.background_dirs
    manifest.jsonl                                           every file (seqflow.data.manifest.Utterance)
    corpus.json                                              summary + fingerprint of config and seed

Negatives (:func:`choose_negatives`): the user's words, sound-alikes of the trigger (source
``confusable``, flag ``confusable`` in the manifest: lexicon words and pairs, and the partial
phrases, one-phoneme edits and rhymes of ``data.hard_negatives``), and common words. Parts and
edits are phoneme mnemonics in ``[[...]]``, the manifest text as well as what espeak-ng and Piper
read; ``corpus.json`` lists every sound-alike with its kind and IPA under ``hard_negatives``.

Voices (accent+variant, e.g. ``en-us+f3``) are split disjointly: test voices are never heard in
training. The sentence corpus (``data.num_sentences``, see :mod:`seqflow.data.synthetic_sentences`)
is split by sentence as well: each sentence is spoken once, by a voice of its own split.

``data.tts_engines`` lists the engines (``espeak`` always; ``piper`` adds ``data.piper.*``): each
Piper voice says the trigger word, the negatives (sound-alikes included) and sentences of its own
(distinct from every espeak sentence), at random length scale, noise scale and noise width; its
renders are split between train and val by ``data.piper.split``, so the test split stays espeak's
held-out voices. Piper renders in a fixed order from one freshly seeded session per voice, split
and kind, which keeps them byte-reproducible. The build
is a function of the config and the seed: two builds give byte-identical files, and a rebuild
with the same fingerprint is skipped ("corpus up to date").

>>> cfg = load_config(["data.num_voices=6"])   # doctest: +SKIP
>>> manifest = build_synthetic_corpus(cfg.data, cfg.audio.sample_rate, cfg.seed)   # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import zlib
from pathlib import Path

import numpy as np
import soundfile as sf
from omegaconf import DictConfig
from tqdm import tqdm

from seqflow.audio.io import AUDIO_SUFFIXES, write_audio_atomic, write_bytes_atomic
from seqflow.audio.resample import resample
from seqflow.data.background import generate_background
from seqflow.data.confusables import confusable_words, load_lexicon, sounds_like_trigger
from seqflow.data.hard_negatives import hard_negatives
from seqflow.data.manifest import MANIFEST_NAME, Utterance, read_manifest, write_manifest
from seqflow.data.piper_tts import PiperTTS, piper_version, speaker_name
from seqflow.data.synthetic_config import SPLITS, validate_config
from seqflow.data.synthetic_piper import PiperJob, plan_piper
from seqflow.data.synthetic_sentences import (contains_words, extra_sentences, plan_digest, plan_sentences, sentence_summary)
from seqflow.data.tts import EspeakTTS
from seqflow.errors import SeqflowError

log = logging.getLogger(__name__)

CORPUS_NAME = "corpus.json"
FORMAT_VERSION = 5  # bump when the generator changes what it writes: forces a rebuild
KINDS = ("positive", "negative", "background", "utterance")
RENDER_PEAK = 0.7  # TTS renders are peak-normalised to this level
def _seed(*parts) -> np.random.Generator:
    """Independent generator per purpose: stable whatever else is drawn elsewhere."""
    return np.random.default_rng([zlib.crc32(repr(p).encode()) for p in parts])


def split_voices(spec: dict, seed: int) -> dict[str, list[str]]:
    """Choose ``num_voices`` accent+variant voices and split them disjointly by ``voice_split``."""
    combos = [f"{a}+{v}" if v else a for a in spec["accents"] for v in (spec["variants"] or [""])]
    n = spec["num_voices"]
    chosen = [combos[i] for i in _seed(seed, "voices").permutation(len(combos))[:n]]
    frac = spec["voice_split"]
    total = sum(frac.values())
    n_val = max(1, int(round(n * frac["val"] / total)))
    n_test = max(1, int(round(n * frac["test"] / total)))
    while n_val + n_test > n - 1:  # keep at least one training voice
        if n_test >= n_val:
            n_test -= 1
        else:
            n_val -= 1
    test, val, train = chosen[:n_test], chosen[n_test: n_test + n_val], chosen[n_test + n_val:]
    return {"train": sorted(train), "val": sorted(val), "test": sorted(test)}


def choose_negatives(spec: dict, seed: int, tts: EspeakTTS) -> list[dict]:
    """User negatives, ``num_confusables`` lexicon sound-alikes, the ``hard_negatives`` made from the
    trigger's phonemes (:mod:`seqflow.data.hard_negatives`), then common words up to ``num_negatives``
    built-in ones besides the hard negatives.

    Returns:
        Rows ``{"text", "source": user|confusable|common}``; confusable rows also carry ``"kind"``
        (lexicon|partial|edit|rhyme). Texts of parts and edits are espeak-ng phoneme mnemonics in
        ``[[...]]`` (:func:`seqflow.data.tts.is_phoneme_text`). Deterministic for ``spec`` and ``seed``.
    """
    trig, user, n_builtin = spec["trigger_word"], spec["negatives"], spec["num_negatives"]
    lexicon = load_lexicon()
    n_conf = min(spec["num_confusables"], n_builtin)
    conf = [w for w in confusable_words(trig, lexicon, tts, n_conf + len(user)) if w not in user][:n_conf]
    hard = hard_negatives(trig, lexicon, spec["hard_negatives"], avoid=user + conf)
    taken = set(user) | set(conf) | {h["text"] for h in hard}
    pool = [w for w in lexicon if len(w) >= 3 and w not in taken and not sounds_like_trigger(w, trig)]
    need = min(max(0, n_builtin - len(conf)), len(pool))
    common = [pool[i] for i in sorted(_seed(seed, "negatives").choice(len(pool), size=need, replace=False))]
    return ([{"text": w, "source": "user"} for w in user]
            + [{"text": w, "source": "confusable", "kind": "lexicon"} for w in conf]
            + [{"text": h["text"], "source": "confusable", "kind": h["kind"]} for h in hard]
            + [{"text": w, "source": "common"} for w in common])


def _user_backgrounds(dirs: list[str]) -> list[tuple[Path, str]]:
    out = []
    for d in dirs:
        files = [p for p in Path(d).rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES]
        out += sorted(((p, p.relative_to(d).as_posix()) for p in files), key=lambda x: x[1])
    return out


def _hash_split(key: str, frac: dict[str, float]) -> str:
    u = int(hashlib.sha256(key.encode()).hexdigest()[:12], 16) / 16**12
    total, acc = sum(frac.values()), 0.0
    for s in SPLITS:
        acc += frac[s] / total
        if u < acc:
            return s
    return SPLITS[-1]


def _fingerprint(spec: dict, sample_rate: int, seed: int, user_bg: list[tuple[Path, str]], tts: EspeakTTS,
                 sentences: str) -> str:
    lex = hashlib.sha256("\n".join(load_lexicon()).encode()).hexdigest()
    files = [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p, _ in user_bg]
    piper = [piper_version(v) for v in spec["piper"]["voices"]] if spec["piper"] else None
    blob = json.dumps({"format": FORMAT_VERSION, "spec": spec, "sample_rate": sample_rate, "seed": seed,
                       "espeak": tts.version, "piper": piper, "lexicon": lex, "user_backgrounds": files,
                       "sentences": sentences}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _finish(wav: np.ndarray, tts_sr: int, sample_rate: int, what: str) -> np.ndarray:
    """Resample a render to ``sample_rate`` and peak-normalise it to :data:`RENDER_PEAK`: ``(S,)`` float32."""
    if wav.size == 0:
        raise SeqflowError(f"{what} rendered no audio")
    wav = resample(wav, tts_sr, sample_rate)
    return wav * np.float32(RENDER_PEAK / max(float(np.abs(wav).max()), 1e-6))


def _render_speech(tts: EspeakTTS, text: str, voice: str, rate: int, pitch: int, sample_rate: int) -> np.ndarray:
    """Render ``text`` with espeak-ng, resample to ``sample_rate``, peak-normalise: ``(S,)`` float32."""
    wav, tts_sr = tts.render(text, voice=voice, rate_wpm=rate, pitch=pitch)
    return _finish(wav, tts_sr, sample_rate, f"espeak-ng ({text!r} in voice {voice})")


def _render_piper(engines: dict[str, PiperTTS], job: PiperJob, sample_rate: int) -> np.ndarray:
    """Render a :class:`PiperJob` (the voice loaded once into ``engines``): ``(S,)`` float32 at ``sample_rate``."""
    wav, tts_sr = engines[job.voice].render(job.spoken, length_scale=job.length_scale, noise_scale=job.noise_scale,
                                            noise_width=job.noise_width)
    return _finish(wav, tts_sr, sample_rate, f"Piper ({job.spoken!r} in voice {job.voice})")


def _up_to_date(root: Path, fingerprint: str) -> bool:
    try:
        summary = json.loads((root / CORPUS_NAME).read_text(encoding="utf-8"))
        if summary.get("fingerprint") != fingerprint:
            return False
        return all(u.resolve(root).is_file() for u in read_manifest(root / MANIFEST_NAME))
    except (OSError, ValueError, TypeError, KeyError):
        return False


def _copy_atomic(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def build_synthetic_corpus(cfg_data: DictConfig, sample_rate: int, seed: int, progress: bool = True) -> Path:
    """Render the trigger-word and sentence corpus described by ``cfg_data`` (``cfg.data``) into its ``root``.

    Args:
        cfg_data: the ``data`` config group (``conf/data/synthetic.yaml`` keys).
        sample_rate: output sample rate [Hz] (``cfg.audio.sample_rate``).
        seed: global seed; equal seeds and configs give byte-identical corpora.
        progress: show a tqdm bar while rendering.

    Returns:
        Path of ``manifest.jsonl``.

    Raises:
        ConfigError: invalid configuration (checked before anything is written).
        SeqflowError: espeak-ng or Piper produced no audio for a text.
    """
    tts = EspeakTTS()
    spec = validate_config(cfg_data, sample_rate, tts)
    root = Path(str(cfg_data.root))
    user_bg = _user_backgrounds(spec["background_dirs"])
    voices = split_voices(spec, seed)
    sentence_jobs = plan_sentences(spec, voices, seed)
    piper_sentences = extra_sentences(spec, spec["piper"]["sentences"] * len(spec["piper"]["voices"]), seed) \
        if spec["piper"] else []
    digest = plan_digest(sentence_jobs) + hashlib.sha256(json.dumps(piper_sentences).encode()).hexdigest()
    fingerprint = _fingerprint(spec, sample_rate, seed, user_bg, tts, digest)
    manifest_path = root / MANIFEST_NAME
    if _up_to_date(root, fingerprint):
        log.info("corpus up to date: %s (fingerprint %s)", root, fingerprint[:12])
        return manifest_path

    negatives = choose_negatives(spec, seed, tts)
    neg_texts = [n["text"] for n in negatives]
    confusable = {n["text"] for n in negatives if n["source"] == "confusable"}
    piper_jobs = plan_piper(spec, neg_texts, piper_sentences, seed)
    log.info("building synthetic corpus in %s: trigger %r, %d negatives (%d confusable), %d sentences, voices %s, "
             "%d Piper renders", root, spec["trigger_word"], len(negatives), len(confusable), len(sentence_jobs),
             {s: len(v) for s, v in voices.items()}, len(piper_jobs))

    (root / CORPUS_NAME).unlink(missing_ok=True)  # the summary marks a complete build: write it last
    for sub in (root / "audio", root / "background" / "user"):
        shutil.rmtree(sub, ignore_errors=True)

    per_voice = spec["renders_per_voice"] + spec["negatives_per_voice"]
    n_bg = sum(spec["backgrounds_per_kind"][s] for s in SPLITS) * len(spec["background_kinds"])
    total = sum(len(v) for v in voices.values()) * per_voice + n_bg + len(sentence_jobs) + len(piper_jobs)
    piper: dict[str, PiperTTS] = {}
    rows: list[Utterance] = []
    bar = tqdm(total=total, desc="prepare: rendering", unit="file", disable=not progress)
    lo_r, hi_r = spec["rates_wpm"]
    lo_p, hi_p = spec["pitches"]
    for split in SPLITS:
        counters = {"positive": 0, "negative": 0}
        for voice in voices[split]:
            rng = _seed(seed, "render", voice)
            tts.reset(seed=zlib.crc32(f"{seed}:{voice}".encode()) & 0x7FFFFFFF)
            jobs = [("positive", spec["trigger_word"])] * spec["renders_per_voice"]
            order: list[int] = []
            while len(order) < spec["negatives_per_voice"]:
                order += [int(i) for i in rng.permutation(len(neg_texts))]
            jobs += [("negative", neg_texts[i]) for i in order[: spec["negatives_per_voice"]]]
            for kind, text in jobs:
                rate, pitch = int(rng.integers(lo_r, hi_r + 1)), int(rng.integers(lo_p, hi_p + 1))
                wav = _render_speech(tts, text, voice, rate, pitch, sample_rate)
                key = f"{split}-{kind}-{counters[kind]:06d}"
                counters[kind] += 1
                rel = f"audio/{split}/{kind}/{key}.flac"
                write_audio_atomic(root / rel, wav, sample_rate)
                extra = {"rate_wpm": rate, "pitch": pitch, "trimmed": True}
                if kind == "negative":
                    extra["confusable"] = text in confusable
                rows.append(Utterance(rel, round(len(wav) / sample_rate, 6), text, voice, split, kind, extra))
                bar.update()
        current = None
        for job in (j for j in sentence_jobs if j.split == split):  # grouped by voice: one reset per voice
            if job.voice != current:
                current = job.voice
                tts.reset(seed=zlib.crc32(f"{seed}:{job.voice}:sentences".encode()) & 0x7FFFFFFF)
            wav = _render_speech(tts, job.normalized, job.voice, job.rate_wpm, job.pitch, sample_rate)
            write_audio_atomic(root / job.rel, wav, sample_rate)
            extra = {"rate_wpm": job.rate_wpm, "pitch": job.pitch, "normalized": job.normalized, "trimmed": True,
                     "contains_trigger": contains_words(job.normalized, spec["trigger_word"])}
            rows.append(Utterance(job.rel, round(len(wav) / sample_rate, 6), job.text, job.voice, split,
                                  "utterance", extra))
            bar.update()
        group = None
        for job in (j for j in piper_jobs if j.split == split):  # one fresh seeded session per voice and kind
            if (job.voice, job.kind) != group:
                group = (job.voice, job.kind)
                s = zlib.crc32(f"{seed}:piper:{job.voice}:{split}:{job.kind}".encode()) & 0x7FFFFFFF
                if job.voice in piper:
                    piper[job.voice].reset(seed=s)
                else:
                    piper[job.voice] = PiperTTS(job.voice, seed=s)
            wav = _render_piper(piper, job, sample_rate)
            write_audio_atomic(root / job.rel, wav, sample_rate)
            extra = {"engine": "piper", "length_scale": job.length_scale, "noise_scale": job.noise_scale,
                     "noise_width": job.noise_width, "trimmed": True}
            if job.kind == "negative":
                extra["confusable"] = job.text in confusable
            if job.kind == "utterance":
                extra.update(normalized=job.spoken, contains_trigger=contains_words(job.spoken, spec["trigger_word"]))
            rows.append(Utterance(job.rel, round(len(wav) / sample_rate, 6), job.text, speaker_name(job.voice),
                                  split, job.kind, extra))
            bar.update()
        for noise in spec["background_kinds"]:
            for i in range(spec["backgrounds_per_kind"][split]):
                rng = _seed(seed, "background", split, noise, i)
                if noise == "babble":
                    tts.reset(seed=zlib.crc32(f"{seed}:{split}:babble:{i}".encode()) & 0x7FFFFFFF)
                wav = generate_background(noise, spec["background_seconds"], sample_rate, rng, tts=tts,
                                          words=neg_texts, voices=voices[split])
                rel = f"audio/{split}/background/{split}-background-{noise}-{i:06d}.flac"
                write_audio_atomic(root / rel, wav, sample_rate)
                rows.append(Utterance(rel, round(len(wav) / sample_rate, 6), "", noise, split, "background",
                                      {"generated": True}))
                bar.update()
    bar.close()

    for n, (src, relsrc) in enumerate(user_bg):
        rel = f"background/user/{n:04d}-{src.name}"
        _copy_atomic(src, root / rel)
        try:
            duration = round(float(sf.info(str(src)).duration), 6)
        except Exception:  # unreadable: copied anyway, validate quarantines it with the reason
            duration = 0.0
        rows.append(Utterance(rel, duration, "", "user", _hash_split(relsrc, spec["voice_split"]), "background",
                              {"source": str(src)}))

    rows.sort(key=lambda u: (SPLITS.index(u.split), KINDS.index(u.kind), u.audio_filepath))
    write_manifest(manifest_path, rows)
    counts = {s: {k: sum(1 for u in rows if u.split == s and u.kind == k) for k in KINDS} for s in SPLITS}
    seconds = {s: {k: round(sum(u.duration for u in rows if u.split == s and u.kind == k), 3) for k in KINDS}
               for s in SPLITS}
    durations = {Path(u.audio_filepath).stem: u.duration for u in rows if u.kind == "utterance"}
    piper_utts = [j for j in piper_jobs if j.kind == "utterance"]
    piper_voices = (spec["piper"] or {}).get("voices", [])
    engines = [f"espeak-ng {tts.version}"] + [f"piper {v}: {piper_version(v)}" for v in piper_voices]
    summary = {"format": FORMAT_VERSION, "fingerprint": fingerprint, "source": "synthetic",
               "trigger_word": spec["trigger_word"], "negatives": negatives,
               "confusables": [n["text"] for n in negatives if n["source"] == "confusable"],
               "hard_negatives": [{"text": n["text"], "kind": n["kind"], "phonemes": tts.phonemes(n["text"])}
                                  for n in negatives if n["source"] == "confusable"],
               "voices": voices, "counts": counts, "seconds": seconds, "sample_rate": sample_rate,
               "sentences": sentence_summary(sentence_jobs + piper_utts, durations), "seed": seed,
               "piper": {s: {k: sum(1 for j in piper_jobs if j.split == s and j.kind == k)
                             for k in ("positive", "negative", "utterance")} for s in ("train", "val")},
               "piper_voices": [speaker_name(v) for v in piper_voices],
               "tts": "; ".join(engines), "config": spec}
    write_bytes_atomic(root / CORPUS_NAME, (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode())
    log.info("synthetic corpus: %s; sentences %s", {s: counts[s] for s in SPLITS},
             {s: (v["count"], v["hours"]) for s, v in summary["sentences"].items()})
    return manifest_path
