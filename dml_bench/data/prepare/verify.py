"""Decoding every image a prepared dataset lists, to find broken files before training does."""

from pathlib import Path
from typing import NamedTuple

from PIL import Image
from tqdm import tqdm

from dml_bench.data.prepare.splits import SPLITS_DIR, read_split
from dml_bench.errors import UserError


class BadImage(NamedTuple):
    path: str
    reason: str


def verify_images(root: str | Path) -> tuple[int, list[BadImage]]:
    """Decode (to RGB) every image listed in ``root/splits/*.csv``: (number checked, bad ones)."""
    root = Path(root)
    split_files = sorted((root / SPLITS_DIR).glob("*.csv"))
    if not split_files:
        raise UserError(f"{root / SPLITS_DIR} holds no split files: prepare the dataset first.")
    paths = list(dict.fromkeys(row.path for f in split_files for row in read_split(f)))
    bad = []
    for path in tqdm(paths, desc="verifying images", unit=" images"):
        try:
            with Image.open(root / path) as image:
                image.convert("RGB")
        except Exception as err:  # any failure to decode makes the image unusable
            bad.append(BadImage(path, f"{type(err).__name__}: {err}"))
    return len(paths), bad
