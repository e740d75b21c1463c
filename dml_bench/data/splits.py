"""Open the splits of a prepared dataset folder, with a clear error when it is not there."""

from pathlib import Path

from dml_bench.data.benchmarks import find_benchmark
from dml_bench.data.cache import open_cache
from dml_bench.data.retrieval_dataset import RetrievalDataset
from dml_bench.data.split_files import split_file
from dml_bench.runtime.errors import UserError


def missing_dataset_error(name: str, root: Path, split: str) -> UserError:
    where = f"{split_file(root, split)} does not exist"
    spec = find_benchmark(name)
    if spec is not None:
        fix = (f"Prepare it first: `python -m dml_bench.prepare_data {spec.name} --root {root}` "
               f"(or `make data DATASET={spec.name}`), or point dataset.root=DIR at a prepared copy.")
    else:
        fix = ("Point dataset.root=DIR at a folder with splits/train.csv and splits/test.csv "
               "(header `path,label`, paths relative to DIR): the format is in docs/datasets.md.")
    return UserError(f"Dataset '{name}' is not prepared: {where}. {fix}")


def open_split(name: str, root: str | Path, split: str, transform=None, cache_resize=None,
               allow_outside_root: bool = False) -> RetrievalDataset:
    """The split's dataset; with ``cache_resize`` its images come from the cache of that Resize;
    ``allow_outside_root``: its split file may list images outside ``root``."""
    root = Path(root)
    if not split_file(root, split).is_file():
        raise missing_dataset_error(name, root, split)
    cache = open_cache(name, root, cache_resize) if cache_resize is not None else None
    return RetrievalDataset(root, split, transform, cache_dir=cache, allow_outside_root=allow_outside_root)
