"""Open the splits of a prepared dataset folder, with a clear error when it is not there."""

from pathlib import Path

from dml_bench.data.retrieval_dataset import RetrievalDataset
from dml_bench.errors import UserError

BENCHMARKS = ("cub200", "cars196", "sop", "inshop")


def missing_dataset_error(name: str, root: Path, split: str) -> UserError:
    where = f"{root / 'splits' / (split + '.csv')} does not exist"
    if name in BENCHMARKS:
        fix = (f"Prepare it first: `python -m dml_bench.prepare_data {name} --root {root}` "
               f"(or `make data DATASET={name}`), or point dataset.root=DIR at a prepared copy.")
    else:
        fix = ("Point dataset.root=DIR at a folder with splits/train.csv and splits/test.csv "
               "(header `path,label`, paths relative to DIR), as described in the README.")
    return UserError(f"Dataset '{name}' is not prepared: {where}. {fix}")


def open_split(name: str, root: str | Path, split: str, transform=None) -> RetrievalDataset:
    root = Path(root)
    try:
        return RetrievalDataset(root, split, transform)
    except FileNotFoundError:
        raise missing_dataset_error(name, root, split) from None
