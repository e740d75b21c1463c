#!/usr/bin/env python
"""What the near-duplicate audit adds to ``prepare_data --verify``, in images per CPU-second.

    python scripts/bench_verify.py [--images 200] [--rounds 3] [--root DIR] [--pairs 10000 120000]

Runs ``verify_images`` on a folder two ways, taking turns round after round: the exact audit
alone (decode, pixel digest) and with the near-duplicate audit (also the pHash of every image,
then every pair of hashes compared). The folder is ``--root`` (a prepared dataset, e.g.
data/glyphs) or, by default, synthetic photo-like 500x375 JPEGs (quality 90, two per class).
Then times the pair comparison alone on random hashes of ``--pairs`` images (SOP has 120,053).
Rates are per CPU-second of this single-threaded process, which other jobs barely change.

First it prints what the threshold has to separate: over ``--copies`` photo-like pictures, how
many bits the pHash of each kind of copy moves (the largest and the median), and the smallest
distance between two distinct pictures.
"""

import argparse
import tempfile
from pathlib import Path

from dml_bench.bench.verify import audit_rates, copy_distances, pair_seconds, synthetic_folder
from dml_bench.data.prepare.near_duplicates import THRESHOLD
from dml_bench.data.split_files import listed_images


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200, help="synthetic JPEGs (default 200)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--root", type=Path, help="a prepared dataset to verify instead of synthetic JPEGs")
    parser.add_argument("--pairs", type=int, nargs="*", default=[10000, 120000],
                        help="numbers of random hashes whose pairs are compared (default 10000 120000)")
    parser.add_argument("--copies", type=int, default=100,
                        help="pictures for the copy distances (default 100; 0: skip them)")
    args = parser.parse_args(argv)
    if args.copies:
        moved, distinct = copy_distances(args.copies)
        print(f"pHash bits moved by a copy, over {args.copies} photo-like 500x375 pictures (threshold {THRESHOLD}):")
        for name, (most, median) in moved.items():
            print(f"  {name}: at most {most}, median {median:g}")
        print(f"  two distinct pictures: at least {distinct}")
    with tempfile.TemporaryDirectory() as scratch:
        root = args.root or synthetic_folder(Path(scratch), args.images)
        count = len(listed_images(root))
        rates = audit_rates(root, args.rounds)
    print(f"{root if args.root else f'{count} synthetic 500x375 JPEGs'}: {count} images, best of {args.rounds} rounds")
    for name, values in rates.items():
        print(f"  {name}: {max(values):.0f} images per CPU-second")
    exact, both = max(rates["exact audit"]), max(rates["exact + near-duplicates"])
    print(f"  near-duplicate audit alone: {1 / (1 / both - 1 / exact):.0f} images per CPU-second"
          if both < exact else "  near-duplicate audit alone: within the noise")
    for n in args.pairs:
        print(f"pairs of {n} hashes compared in {pair_seconds(n):.1f} CPU-seconds")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
