"""Loader benchmark: seqflow's WebDataset shard loader vs a per-file FLAC loader, side by side.

Both read the same N synthetic 10-s clips (16 kHz FLAC), decode them, and collate batches of
16 with the same DataLoader settings; the per-file loader is the usual `Dataset` that opens one
file per sample. Prints samples/s for each and the ratio.

    .venv/bin/python bench/bench_loader.py [--clips 480] [--workers 0 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader, Dataset

from seqflow.shards.reader import collate, make_dataloader
from seqflow.shards.writer import write_shards

SR = 16000


class PerFileDataset(Dataset):
    """One FLAC file per sample, decoded with soundfile (the baseline)."""

    def __init__(self, files: list[Path]) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict:
        wav, _ = sf.read(self.files[i], dtype="float32")
        return {"key": self.files[i].stem, "wav": wav, "text": "", "meta": {"labels": [0] * 247}}


def make_clips(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        wav = (0.05 * rng.standard_normal(10 * SR)).astype(np.float32)
        yield {"__key__": f"clip-{i:06d}", "audio": wav, "sample_rate": SR, "txt": "",
               "json": {"duration": 10.0, "sample_rate": SR, "segments": [], "labels": [0] * 247}}


def rate(loader, n_expected: int) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = 0
    for batch in loader:
        n += int(batch["audio"].shape[0])
    return n / (time.perf_counter() - t0), n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=480)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1])
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        index = write_shards(make_clips(args.clips), tmp / "shards", "train", target_bytes=8_000_000,
                             min_shards=2, progress=False)
        files = []
        for s in make_clips(args.clips):
            f = tmp / "files" / f"{s['__key__']}.flac"
            f.parent.mkdir(exist_ok=True)
            sf.write(f, s["audio"], SR, subtype="PCM_16")
            files.append(f)
        print(f"{args.clips} clips x 10 s, {len(index['shards'])} shards; batch 16; torch threads 1")
        for nw in args.workers:
            shard_dl = make_dataloader(tmp / "shards" / "index.json", 16, rank=0, world_size=1,
                                       num_workers=nw, shuffle=True, seed=0)
            file_dl = DataLoader(PerFileDataset(files), batch_size=16, shuffle=True, num_workers=nw,
                                 collate_fn=collate, drop_last=True)
            rate(shard_dl, 0), rate(file_dl, 0)  # warm page cache and imports
            r_shard, n1 = rate(shard_dl, 0)
            r_file, n2 = rate(file_dl, 0)
            print(f"workers={nw}: seqflow shards {r_shard:7.1f} samples/s ({n1}) | per-file {r_file:7.1f} "
                  f"samples/s ({n2}) | ratio {r_shard / r_file:.2f}x")


if __name__ == "__main__":
    main()
