"""``python -m seqflow.evalsets [--root eval-data] [--sets a,b] [--max-files N] [--max-seconds S]``.

Builds the real-audio evaluation sets (and the train-only banks ``train-noise/`` and
``train-speech/``, :mod:`seqflow.evalsets.train_noise`); prints ``eval-data: skipped (<reason>)`` and exits 0 where
the Debian packages cannot be obtained (no apt-get, no network).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from seqflow.evalsets.build import build_eval_data
from seqflow.evalsets.builders import SETS, Caps


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m seqflow.evalsets", description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("eval-data"), help="output folder (default: eval-data)")
    ap.add_argument("--sets", default="", help=f"comma-separated subset of {','.join(SETS)} (default: all)")
    ap.add_argument("--max-files", type=int, default=None, help="at most this many files per source")
    ap.add_argument("--max-seconds", type=float, default=None, help="at most about this much audio per source [s]")
    ap.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sets = [s for s in a.sets.split(",") if s] or None
    built = build_eval_data(a.root, sets, Caps(a.max_files, a.max_seconds), progress=not a.no_progress)
    if built:  # the packages can be fetched here: also the train-only noise and speech banks
        from seqflow.evalsets.train_noise import bank_seconds, build_train_noise, build_train_speech

        build_train_noise(a.root, progress=not a.no_progress)
        for folder in build_train_speech(a.root, progress=not a.no_progress):
            print(f"eval-data: train-speech/{folder.name}: {bank_seconds(folder) / 3600:.3f} h -> {folder}")
    for name, manifest in built.items():
        meta = json.loads((manifest.parent / "set.json").read_text())
        per = "  ".join(f"{s} {v['num_utterances']} utt {v['hours']:.3f} h" for s, v in meta["per_split"].items())
        print(f"eval-data: {name}: {meta['num_utterances']} utt {meta['hours']:.3f} h ({per}), "
              f"{meta['num_quarantined']} quarantined -> {manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
