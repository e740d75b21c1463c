"""Decoding every image a prepared dataset lists, to find broken files before training does."""

from pathlib import Path
from typing import NamedTuple

from PIL import Image
from tqdm import tqdm

from dml_bench.data.split_files import listed_images


class BadImage(NamedTuple):
    path: str
    reason: str


def verify_images(root: str | Path) -> tuple[int, list[BadImage]]:
    """Decode (to RGB) every image listed in ``root/splits/*.csv``: (number checked, bad ones)."""
    root = Path(root)
    paths = listed_images(root)
    bad = []
    for path in tqdm(paths, desc="verifying images", unit=" images"):
        try:
            with Image.open(root / path) as image:
                image.convert("RGB")
        except Exception as err:  # any failure to decode makes the image unusable
            bad.append(BadImage(path, f"{type(err).__name__}: {err}"))
    return len(paths), bad
