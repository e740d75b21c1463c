"""One dataset class for every benchmark: images listed in a prepared split file."""

import csv
from pathlib import Path

import torch
from torch.utils.data import Dataset

from dml_bench.data.cache import cached_file
from dml_bench.data.decode import DECODE_ERRORS, read_rgb
from dml_bench.errors import UserError


def read_split(root: Path, split: str) -> tuple[list[str], list[int]]:
    """Read ``<root>/splits/<split>.csv`` (header ``path,label``; paths relative to root)."""
    split_file = root / "splits" / f"{split}.csv"
    if not split_file.is_file():
        raise FileNotFoundError(split_file)
    with open(split_file, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"path", "label"} <= set(reader.fieldnames):
            raise UserError(f"{split_file} must have the header 'path,label', got {reader.fieldnames}.")
        rows = [(row["path"], int(row["label"])) for row in reader]
    if not rows:
        raise UserError(f"{split_file} lists no images.")
    paths, labels = zip(*rows)
    return list(paths), list(labels)


class RetrievalDataset(Dataset):
    """Images and class labels of one split; every image is read as a (3, H, W) uint8 RGB tensor.

    ``labels`` keeps the dataset's own class ids (used for retrieval metrics);
    ``targets`` maps them to 0..num_classes-1 (used by classification-style losses).
    ``rows`` = (paths, labels) gives a part of the split instead of the whole file (e.g. a
    validation part carved out of train).
    ``transform`` may declare ``min_decode_size`` (width, height): JPEGs are then decoded at
    reduced scale down to that size. ``cache_dir`` reads the images from a pre-resized cache
    (``dml_bench.data.cache``) instead of ``root``.
    """

    def __init__(self, root: str | Path, split: str, transform=None, rows: tuple[list, list] | None = None,
                 cache_dir: Path | None = None):
        self.root = Path(root)
        self.split = split
        self.transform = transform
        self.cache_dir = cache_dir
        self.min_decode_size = getattr(transform, "min_decode_size", None)
        self.paths, self.labels = (list(rows[0]), list(rows[1])) if rows else read_split(self.root, split)
        self.classes = sorted(set(self.labels))
        index_of = {label: i for i, label in enumerate(self.classes)}
        self.targets = [index_of[label] for label in self.labels]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.paths)

    def load_image(self, index: int) -> torch.Tensor:
        relative = self.paths[index]
        path = cached_file(self.cache_dir, relative) if self.cache_dir else self.root / relative
        try:
            return read_rgb(path, self.min_decode_size)
        except DECODE_ERRORS as error:
            raise UserError(
                f"Cannot read image {path} (listed in {self.root / 'splits' / self.split}.csv): "
                f"{error}. Re-extract the dataset or run `python -m dml_bench.prepare_data NAME "
                f"--root {self.root} --verify` to list every unreadable image."
            ) from error

    def __getitem__(self, index: int):
        image = self.load_image(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index], index
