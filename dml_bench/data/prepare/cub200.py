"""CUB-200-2011: 11,788 photos of 200 bird species.

The zero-shot split takes classes 1-100 for training and 101-200 for testing, read from
``image_class_labels.txt``; ``train_test_split.txt`` is the classification split and is not used.
"""

from collections.abc import Mapping
from pathlib import Path

from dml_bench.data.prepare.annotations import read_table, split_by_class
from dml_bench.data.prepare.spec import DatasetSpec, OfficialFile
from dml_bench.data.split_files import Row

FOLDER = "CUB_200_2011"


def read_splits(root: Path, files: Mapping[str, Path]) -> dict[str, list[Row]]:
    base = root / FOLDER
    paths = dict(read_table(base / "images.txt", columns=2))
    rows = (
        Row(f"{FOLDER}/images/{paths[image_id]}", int(label))
        for image_id, label in read_table(base / "image_class_labels.txt", columns=2)
    )
    return split_by_class(rows, last_train_class=100)


SPEC = DatasetSpec(
    name="cub200",
    title="CUB-200-2011",
    alias="cub",
    files=(
        OfficialFile(
            "CUB_200_2011.tgz",
            md5="97eceeb196236b17998738112f37df78",
            url="https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz",
        ),
    ),
    read_splits=read_splits,
    standard_counts={"train": 5864, "test": 5924},
    recipe_resize=256,
    experiment="paper_cub",
    paper_recall={1: 69.2, 2: 79.2, 4: 86.9, 8: 91.6, 16: 95.0, 32: 97.3},
)
