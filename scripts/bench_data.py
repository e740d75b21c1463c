#!/usr/bin/env python
"""Data-pipeline throughput per worker: the plain torchvision pipeline vs ours, in one run.

    python scripts/bench_data.py [--images 64] [--rounds 5] [--folder DIR]

Writes synthetic photo-like JPEGs (500x375 and 1000x750, quality 90) and measures images/s of one
single-threaded worker (load, augment, collate) for: PIL decode alone; the plain pipeline (PIL.open
-> RGB -> Resize(256) -> RandomResizedCrop(224) -> flip -> ToTensor -> Normalize); ours (uint8
tensors, reduced-size decoding, fused resize+crop, normalisation left to the device); ours reading
the pre-resized cache; and both with CUB's colour jitter. Rates are images per CPU-second of the
single-threaded process, which other jobs on a shared machine barely change. Pipelines take turns round after round;
ratios compare the fastest rounds and, to show the noise, the rounds one by one.
"""

import argparse
import tempfile
from pathlib import Path

import torch

from dml_bench.bench.data_pipeline import bench_size
from dml_bench.bench.timing import RATIO_HEADERS
from dml_bench.runtime.tables import markdown_table

SIZES = ((500, 375), (1000, 750))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64, help="JPEGs per size (default 64)")
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds (default 5)")
    parser.add_argument("--folder", type=Path, help="where to write the images (default: a temporary folder)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # as in a DataLoader worker
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder or Path(tmp)
        rows = [row for size in SIZES
                for row in bench_size(folder / f"{size[0]}x{size[1]}", size, args.images, args.rounds)]
    print(markdown_table(["image size", "pipeline (one worker)", "compared with", *RATIO_HEADERS], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
