"""One dataset class for every benchmark: images listed in a prepared split file."""

from pathlib import Path

import torch
from torch.utils.data import Dataset

from dml_bench.data.cache import cached_file
from dml_bench.data.decode import DECODE_ERRORS, read_rgb
from dml_bench.data.split_files import read_split, split_file
from dml_bench.runtime.errors import UserError


class RetrievalDataset(Dataset):
    """Images and class labels of one split; every image is read as a (3, H, W) uint8 RGB tensor.

    The split is ``<root>/splits/<split>.csv``, read by ``dml_bench.data.split_files.read_split``.

    ``labels`` keeps the dataset's own class ids (used for retrieval metrics);
    ``targets`` maps them to 0..num_classes-1 (used by classification-style losses).
    ``rows`` = (paths, labels) gives a part of the split instead of the whole file (e.g. a
    validation part carved out of train).
    ``transform`` may declare ``min_decode_size`` (width, height): JPEGs are then decoded at
    reduced scale down to that size. ``cache_dir`` reads the images from a pre-resized cache
    (``dml_bench.data.cache``) instead of ``root``. ``allow_outside_root`` accepts listed paths
    outside ``root`` (``dataset.allow_outside_root``).
    """

    def __init__(self, root: str | Path, split: str, transform=None, rows: tuple[list, list] | None = None,
                 cache_dir: Path | None = None, allow_outside_root: bool = False):
        self.root = Path(root)
        self.split = split
        self.transform = transform
        self.cache_dir = cache_dir
        self.min_decode_size = getattr(transform, "min_decode_size", None)
        if not rows:
            listed = read_split(split_file(self.root, split), allow_outside_root)
            rows = ([row.path for row in listed], [row.label for row in listed])
        self.paths, self.labels = list(rows[0]), list(rows[1])
        self.classes = sorted(set(self.labels))
        index_of = {label: i for i, label in enumerate(self.classes)}
        self.targets = [index_of[label] for label in self.labels]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.paths)

    def load_image(self, index: int, min_size: tuple[int, int] | None = None) -> torch.Tensor:
        """The image, decoded at reduced scale down to ``min_size`` (default: the transform's
        ``min_decode_size``) where the file allows."""
        relative = self.paths[index]
        path = cached_file(self.cache_dir, relative) if self.cache_dir else self.root / relative
        try:
            return read_rgb(path, min_size or self.min_decode_size)
        except DECODE_ERRORS as error:
            raise UserError(
                f"Cannot read image {path} (listed in {split_file(self.root, self.split)}): "
                f"{error}. Re-extract the dataset or run `python -m dml_bench.prepare_data NAME "
                f"--root {self.root} --verify` (NAME: the dataset's name, or csv for your own folder) "
                "to list every unreadable image."
            ) from error

    def __getitem__(self, index: int):
        image = self.load_image(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index], index
