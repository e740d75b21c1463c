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
import io
import tempfile
import time
from itertools import combinations
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from dml_bench.bench.synthetic import photo_like, write_jpegs
from dml_bench.bench.timing import interleaved_rates
from dml_bench.data.prepare.near_duplicates import THRESHOLD, close_pairs, perceptual_hash
from dml_bench.data.prepare.verify import verify_images
from dml_bench.data.split_files import listed_images, write_splits


def synthetic_folder(root: Path, count: int) -> Path:
    paths = write_jpegs(root / "images", (500, 375), count)
    write_splits(root, {"train": [(p.relative_to(root).as_posix(), i // 2) for i, p in enumerate(paths)]})
    return root


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(buffer)


def crop(image: Image.Image, fraction: float) -> Image.Image:
    width, height = image.size
    return image.crop((round(width * fraction), round(height * fraction), width, height)).resize(image.size)


COPIES = {
    "half size": lambda image: image.resize((image.width // 2, image.height // 2), Image.BILINEAR),
    "JPEG quality 60": lambda image: jpeg(image, 60),
    "brightness +10 %": lambda image: ImageEnhance.Brightness(image).enhance(1.1),
    "rotated 1 degree": lambda image: image.rotate(1, resample=Image.BILINEAR),
    "2 % cropped off two sides": lambda image: crop(image, 0.02),
}


def copy_distances(count: int) -> None:
    pictures = [photo_like(500, 375, seed) for seed in range(count)]
    hashes = [perceptual_hash(picture) for picture in pictures]
    print(f"pHash bits moved by a copy, over {count} photo-like 500x375 pictures (threshold {THRESHOLD}):")
    for name, make in COPIES.items():
        moved = [bin(perceptual_hash(make(p)) ^ h).count("1") for p, h in zip(pictures, hashes)]
        print(f"  {name}: at most {max(moved)}, median {int(np.median(moved))}")
    print(f"  two distinct pictures: at least {min(bin(a ^ b).count('1') for a, b in combinations(hashes, 2))}")


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
        copy_distances(args.copies)
    with tempfile.TemporaryDirectory() as scratch:
        root = args.root or synthetic_folder(Path(scratch), args.images)
        count = len(listed_images(root))
        rates = interleaved_rates({
            "exact audit": lambda: verify_images(root, near_threshold=None).checked,
            "exact + near-duplicates": lambda: verify_images(root, near_threshold=THRESHOLD).checked,
        }, args.rounds, clock=time.process_time)
    print(f"{root if args.root else f'{count} synthetic 500x375 JPEGs'}: {count} images, best of {args.rounds} rounds")
    for name, values in rates.items():
        print(f"  {name}: {max(values):.0f} images per CPU-second")
    exact, both = max(rates["exact audit"]), max(rates["exact + near-duplicates"])
    print(f"  near-duplicate audit alone: {1 / (1 / both - 1 / exact):.0f} images per CPU-second"
          if both < exact else "  near-duplicate audit alone: within the noise")
    rng = np.random.default_rng(0)
    for n in args.pairs:
        hashes = rng.integers(0, 2**63, n, dtype=np.uint64, endpoint=True)
        start = time.process_time()
        close_pairs(hashes, THRESHOLD)
        print(f"pairs of {n} hashes compared in {time.process_time() - start:.1f} CPU-seconds")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
