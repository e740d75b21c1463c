"""A real preparer of a two-image dataset, as small as a ``dataset.prepare`` target can be: it
records in ``log`` when it starts, and whether it kept the folder or wrote it (slowly, so that
two processes preparing at once would overlap without the preparation lock)."""

import os
import time
from pathlib import Path

from PIL import Image

from dml_bench.data.split_files import Marker, read_marker, split_file, write_marker, write_splits

NAME = "two_images"


def prepare_two_images(root: str, size: int, log: str, seconds: float = 1.0) -> None:
    root, settings = Path(root), {"size": size}
    with open(log, "a") as f:
        f.write(f"start {os.getpid()}\n")
    if read_marker(root) == Marker(NAME, settings) and split_file(root, "train").is_file():
        with open(log, "a") as f:
            f.write(f"kept {os.getpid()}\n")
        return
    (root / MARKER_FREE).unlink(missing_ok=True)
    time.sleep(seconds)
    (root / "images").mkdir(parents=True, exist_ok=True)
    for index in range(2):
        Image.new("L", (size, size), 100 * index).save(root / "images" / f"{index}.png")
    write_splits(root, {"train": [(f"images/{index}.png", index) for index in range(2)]})
    write_marker(root, NAME, settings)
    with open(log, "a") as f:
        f.write(f"wrote {os.getpid()}\n")


MARKER_FREE = ".prepared"  # the marker goes first: not prepared until written again
