"""Synthetic photo-like JPEGs (CUB-sized by default) for the data-pipeline benchmarks.

Smooth colour regions, a mid-frequency texture and sensor-like noise, saved at JPEG quality 90:
they decode at about the speed of real bird photos of the same size (the decoder's cost depends
mostly on the number of non-zero DCT coefficients, i.e. on the texture).
"""

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image


def photo_like(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    smooth = Image.fromarray(rng.integers(0, 256, (height // 32 + 2, width // 32 + 2, 3), np.uint8))
    texture = Image.fromarray(rng.integers(0, 256, (height // 4 + 1, width // 4 + 1, 3), np.uint8))
    pixels = (0.7 * np.asarray(smooth.resize((width, height), Image.BICUBIC), np.float32)
              + 0.2 * np.asarray(texture.resize((width, height), Image.BILINEAR), np.float32)
              + rng.normal(0.0, 6.0, (height, width, 3)))
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def _write_one(task) -> None:
    path, size, seed = task
    if not path.is_file():
        photo_like(*size, seed=seed).save(path, quality=90)


def write_jpegs(folder: str | Path, size: tuple[int, int], count: int, seed: int = 0,
                workers: int = 1) -> list[Path]:
    """``count`` JPEGs of ``size`` = (width, height) in ``folder`` (kept if already there)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tasks = [(folder / f"{size[0]}x{size[1]}_{i:05d}.jpg", size, seed + i) for i in range(count)]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_write_one, tasks, chunksize=16))
    else:
        for task in tasks:
            _write_one(task)
    return [path for path, _, _ in tasks]
