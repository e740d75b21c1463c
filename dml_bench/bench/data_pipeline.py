"""The data-pipeline benchmark: the plain torchvision pipeline (the baseline) against ours.

Both read the same JPEG files and draw augmentations from the same distribution; a "worker" here
is what one DataLoader worker does: load and transform images, then collate them into batches.
"""

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset, default_collate
from torchvision import transforms as T

from dml_bench.bench.synthetic import write_jpegs
from dml_bench.bench.timing import interleaved_rates, ratio_columns
from dml_bench.data.cache import build_cache
from dml_bench.data.retrieval_dataset import RetrievalDataset
from dml_bench.data.split_files import write_splits
from dml_bench.data.transforms import TrainTransform
from dml_bench.models.pixel_normalize import IMAGENET_MEAN, IMAGENET_STD


class PlainDataset(Dataset):
    """PIL.open -> convert RGB -> Resize -> [ColorJitter] -> RandomResizedCrop -> flip -> ToTensor
    -> Normalize: float32 (3, crop, crop) images, normalised on the CPU."""

    def __init__(self, paths: Sequence[Path], crop_size=224, resize=256, color_jitter=None,
                 scale=(0.16, 1.0), ratio=(3 / 4, 4 / 3)):
        self.paths = list(paths)
        steps = [T.Resize(resize)] + ([T.ColorJitter(*color_jitter)] if color_jitter else [])
        self.transform = T.Compose(steps + [
            T.RandomResizedCrop(crop_size, scale=scale, ratio=ratio), T.RandomHorizontalFlip(),
            T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        with Image.open(self.paths[index]) as image:
            return self.transform(image.convert("RGB"))


class DecodeOnlyDataset(PlainDataset):
    """PIL.open -> convert RGB, nothing else: the floor the plain pipeline stands on."""

    def __getitem__(self, index: int):
        with Image.open(self.paths[index]) as image:
            return image.convert("RGB")


def write_split(root: Path, paths: Sequence[Path]) -> None:
    """``root/splits/train.csv`` listing ``paths`` (under ``root``), so RetrievalDataset reads them."""
    write_splits(root, {"train": [(Path(p).relative_to(root).as_posix(), 0) for p in paths]})


def our_dataset(root: Path, color_jitter=None, cache_dir: Path | None = None, crop_size=224,
                resize=256) -> RetrievalDataset:
    transform = TrainTransform(crop_size, resize=resize, color_jitter=color_jitter)
    return RetrievalDataset(root, "train", transform, cache_dir=cache_dir)


def one_pass(dataset: Dataset, batch_size: int = 32, collate: bool = True) -> Callable[[], int]:
    """A pass over ``dataset`` as one worker makes it (items, then collated batches)."""

    def run() -> int:
        for start in range(0, len(dataset), batch_size):
            items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            if collate:
                default_collate(items)
        return len(dataset)

    return run


CUB_JITTER = (0.25, 0.25, 0.25, 0.0)


def bench_size(root: Path, size: tuple[int, int], images: int, rounds: int) -> list[list]:
    paths = write_jpegs(root / "images", size, images)
    write_split(root, paths)
    cache = build_cache(root, 256)
    passes = {
        "decode only (PIL)": one_pass(DecodeOnlyDataset(paths), collate=False),
        "plain": one_pass(PlainDataset(paths)),
        "ours": one_pass(our_dataset(root)),
        "ours, cached": one_pass(our_dataset(root, cache_dir=cache)),
        "plain + CUB jitter": one_pass(PlainDataset(paths, color_jitter=CUB_JITTER)),
        "ours + CUB jitter": one_pass(our_dataset(root, color_jitter=CUB_JITTER)),
    }
    baselines = {name: "plain + CUB jitter" if "jitter" in name else "plain" for name in passes}
    columns = ratio_columns(interleaved_rates(passes, rounds, clock=time.process_time), baselines)
    return [[f"{size[0]}x{size[1]}", name, baselines[name], *columns[name]] for name in passes]
