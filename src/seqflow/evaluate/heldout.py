"""The ``heldout_engine`` evaluation set: what the festival engine (never trained on) says.

Built by the prepare stage because it depends on the trigger phrase: the phrase alone and in
carrier sentences (positives), the phrase's sound-alikes from the corpus (``confusable``), and
``num_sentences`` sentences of the corpus's **test** sentence split (ASR; unseen sentences). Each
text is rendered once per festival voice. Festival reads English words only: the corpus's
sound-alikes written as espeak-ng phoneme mnemonics (``[[...]]``: partial phrases and one-phoneme
edits, :mod:`seqflow.data.hard_negatives`) are left out of this set; the word-based ones stay. Festival is an evaluation engine only: nothing here
feeds training, and the set lives outside ``data/`` so it never changes the data version.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig

log = logging.getLogger("seqflow.prepare")
VOICES_PER_TEXT = 3  # festvox kal, ked, slt: each text rendered by every voice (items repeat consecutively)
CARRIERS = ("{p}", "{p}.", "{p} please", "okay {p}", "{p} now", "please {p}", "{p} turn on the lights",
            "{p} what time is it", "hello {p}", "can you {p}", "{p} set a timer for five minutes",
            "I said {p}")


def heldout_items(corpus_root: Path, trigger: str, num_sentences: int) -> list[dict]:
    """``[{"key", "text", "confusable"}]`` to render, in a fixed order (each text repeated
    :data:`VOICES_PER_TEXT` times so every voice speaks it).

    Args:
        corpus_root: a synthetic corpus (``corpus.json`` and ``manifest.jsonl``).
        trigger: the trigger phrase, said alone and in :data:`CARRIERS`.
        num_sentences: how many test sentences (sorted by file name) to add.

    Returns:
        The items; sound-alikes are the word-based ``confusables`` of ``corpus.json`` only
        (:func:`festival_readable`), keyed by their position in that list.

    Raises:
        OSError / ValueError: ``corpus.json`` or the manifest is missing or not JSON.
    """
    summary = json.loads((corpus_root / "corpus.json").read_text())
    texts: list[tuple[str, str, bool]] = [(f"positive-{i:03d}", c.format(p=trigger), False)
                                          for i, c in enumerate(CARRIERS)]
    texts += [(f"confusable-{i:03d}", w, True) for i, w in enumerate(summary.get("confusables", []))
              if festival_readable(w)]
    sentences = []
    for line in (corpus_root / "manifest.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row.get("split") == "test" and row.get("kind") == "utterance":
            sentences.append((Path(row["audio_filepath"]).stem, row["text"]))
    for key, text in sorted(sentences)[:num_sentences]:
        texts.append((f"sentence-{key}", text, False))
    return [{"key": f"{key}-v{v}", "text": text, "confusable": conf}
            for key, text, conf in texts for v in range(VOICES_PER_TEXT)]


def festival_readable(text: str) -> bool:
    """False for espeak-ng phoneme mnemonics (``"[[h'eI dZ'A@vIz]]"``), which festival would read
    as letters; True for words."""
    from seqflow.data.tts import is_phoneme_text

    return not is_phoneme_text(text)


def build_heldout_set(cfg: DictConfig) -> Path | None:
    """Render the set into the folder of the ``heldout_engine`` manifest in ``evaluate.sets``;
    returns the manifest, or None (one log line) when disabled, not a synthetic corpus, or
    festival is unavailable here."""
    from seqflow.evalsets import EvalDataUnavailable
    from seqflow.evalsets.festival import build_heldout_engine

    ev = cfg.evaluate
    spec = next((s for s in ev.sets if s.name == "heldout_engine"), None)
    if spec is None or not ev.heldout_engine.enabled:
        return None
    if cfg.data.source != "synthetic":
        log.info("heldout_engine: skipped (data=%s has no trigger phrase and test sentences to render)",
                 cfg.data.source)
        return None
    root = Path(str(cfg.data.root))
    items = heldout_items(root, str(cfg.data.trigger_word), int(ev.heldout_engine.num_sentences))
    manifest = Path(str(spec.manifest))
    try:
        path = build_heldout_engine(manifest.parent, [(i["key"], i["text"]) for i in items], Path(str(ev.eval_data)),
                                    name="heldout_engine")
    except EvalDataUnavailable as e:
        log.info("heldout_engine: skipped (%s)", e)
        return None
    annotate(path, {i["key"] for i in items if i["confusable"]})
    summary = json.loads((root / "corpus.json").read_text())
    unread = sum(not festival_readable(w) for w in summary.get("confusables", []))
    log.info("heldout_engine: %d festival renders (%d with the phrase, %d sound-alikes; %d phoneme-only "
             "sound-alikes left out: festival reads words) in %s", len(items),
             sum(i["key"].startswith("positive-") for i in items), sum(i["confusable"] for i in items), unread, path)
    return path


def annotate(manifest: Path, confusable_keys: set[str]) -> None:
    """Mark sound-alikes (``"confusable": true``, by the row's ``key``) and split dev/eval by
    *text*, so one text spoken by three voices never lands in both halves (atomic rewrite)."""
    from seqflow.evalsets.splits import hash_split

    rows = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines() if line.strip()]
    for r in rows:
        r["confusable"] = r["key"] in confusable_keys
        r["split"] = hash_split(r["key"].rsplit("-v", 1)[0])
    tmp = manifest.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(manifest)
