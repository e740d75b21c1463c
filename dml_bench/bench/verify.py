"""The workloads of ``scripts/bench_verify.py``: what the near-duplicate audit costs, and how far
copies of a picture move its perceptual hash."""

import io
import statistics
import time
from itertools import combinations
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from dml_bench.bench.synthetic import photo_like, write_jpegs
from dml_bench.bench.timing import interleaved_rates
from dml_bench.data.prepare.near_duplicates import THRESHOLD, close_pairs, perceptual_hash
from dml_bench.data.prepare.verify import verify_images
from dml_bench.data.split_files import write_splits


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(buffer)


def crop(image: Image.Image, fraction: float) -> Image.Image:
    """``fraction`` of the width and height cut off the left and top, resized back."""
    width, height = image.size
    return image.crop((round(width * fraction), round(height * fraction), width, height)).resize(image.size)


COPIES = {
    "half size": lambda image: image.resize((image.width // 2, image.height // 2), Image.BILINEAR),
    "JPEG quality 60": lambda image: jpeg(image, 60),
    "brightness +10 %": lambda image: ImageEnhance.Brightness(image).enhance(1.1),
    "rotated 1 degree": lambda image: image.rotate(1, resample=Image.BILINEAR),
    "2 % cropped off two sides": lambda image: crop(image, 0.02),
}


def copy_distances(count: int, size: tuple[int, int] = (500, 375)) -> tuple[dict[str, tuple[int, float]], int]:
    """Over ``count`` photo-like pictures: per kind of copy, the most and the median bits its
    pHash moved; and the fewest bits between two distinct pictures."""
    pictures = [photo_like(*size, seed) for seed in range(count)]
    hashes = [perceptual_hash(picture) for picture in pictures]
    moved = {name: [bin(perceptual_hash(make(p)) ^ h).count("1") for p, h in zip(pictures, hashes)]
             for name, make in COPIES.items()}
    distinct = min(bin(a ^ b).count("1") for a, b in combinations(hashes, 2))
    return {name: (max(bits), statistics.median(bits)) for name, bits in moved.items()}, distinct


def synthetic_folder(root: Path, count: int, size: tuple[int, int] = (500, 375)) -> Path:
    """``count`` photo-like JPEGs listed in ``root/splits/train.csv``, two per class."""
    paths = write_jpegs(root / "images", size, count)
    write_splits(root, {"train": [(p.relative_to(root).as_posix(), i // 2) for i, p in enumerate(paths)]})
    return root


def audit_rates(root: Path, rounds: int) -> dict[str, list[float]]:
    """Images per CPU-second of ``verify_images`` on ``root``, exact audit alone and with the
    near-duplicate audit, taking turns round after round."""
    return interleaved_rates({
        "exact audit": lambda: verify_images(root, near_threshold=None).checked,
        "exact + near-duplicates": lambda: verify_images(root, near_threshold=THRESHOLD).checked,
    }, rounds, clock=time.process_time)


def pair_seconds(count: int, seed: int = 0) -> float:
    """CPU-seconds to compare every pair of ``count`` random 64-bit hashes."""
    hashes = np.random.default_rng(seed).integers(0, 2**63, count, dtype=np.uint64, endpoint=True)
    start = time.process_time()
    close_pairs(hashes, THRESHOLD)
    return time.process_time() - start
