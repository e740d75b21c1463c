"""DeepFashion In-shop Clothes Retrieval: 52,712 photos of 7,982 clothing items.

``list_eval_partition.txt`` gives each image's item (``id_00000001``, label 1) and its split:
train, query or gallery. No official checksum is published for these files.
"""

import re
from collections.abc import Mapping
from pathlib import Path

from dml_bench.data.prepare.annotations import read_table
from dml_bench.data.prepare.spec import DatasetSpec, OfficialFile
from dml_bench.data.split_files import Row
from dml_bench.runtime.errors import UserError

PARTITION = "list_eval_partition.txt"
SPLITS = ("train", "query", "gallery")


def read_splits(root: Path, files: Mapping[str, Path]) -> dict[str, list[Row]]:
    splits = {split: [] for split in SPLITS}
    # The first line is the number of images, the second the column names.
    for path, item_id, status in read_table(files[PARTITION], columns=3, header_lines=2):
        if status not in splits:
            raise UserError(
                f"{files[PARTITION]}: unknown evaluation_status {status!r} for {path} (expected "
                f"one of {', '.join(SPLITS)}). Obtain the official {PARTITION}."
            )
        splits[status].append(Row(path, item_label(item_id)))
    return splits


def item_label(item_id: str) -> int:
    """``id_00000001`` -> 1."""
    match = re.fullmatch(r"id_(\d+)", item_id)
    if not match:
        raise UserError(
            f"{item_id!r} is not an In-Shop item id like id_00000001: obtain the official "
            f"{PARTITION}."
        )
    return int(match[1])


SPEC = DatasetSpec(
    name="inshop",
    title="In-Shop Clothes Retrieval",
    alias="inshop",
    files=(
        OfficialFile("img.zip", md5=None, url=None, folder_paths=("Img/img.zip",)),
        OfficialFile(PARTITION, md5=None, url=None, folder_paths=(f"Eval/{PARTITION}",)),
    ),
    read_splits=read_splits,
    standard_counts={"train": 25882, "query": 14218, "gallery": 12612},
    recipe_resize=None,  # the images are 256 x 256 already: the recipe crops them as they are
    experiment="paper_inshop",
    paper_recall={1: 90.6, 10: 98.0, 20: 98.6, 30: 98.9, 40: 99.1, 50: 99.2},
    where_to_get=(
        "from the DeepFashion In-shop Clothes Retrieval Benchmark's shared drive, linked from "
        "mmlab.ie.cuhk.edu.hk/projects/DeepFashion/InShopRetrieval.html: Img/img.zip and "
        f"Eval/{PARTITION}"
    ),
)
