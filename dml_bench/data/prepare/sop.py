"""Stanford Online Products: 120,053 photos of 22,634 products sold on eBay.

The split is the official one: ``Ebay_train.txt`` (classes 1-11,318) and ``Ebay_test.txt``.
"""

from collections.abc import Mapping
from pathlib import Path

from dml_bench.data.prepare.annotations import read_table
from dml_bench.data.prepare.spec import DatasetSpec, OfficialFile
from dml_bench.data.split_files import Row

FOLDER = "Stanford_Online_Products"


def read_splits(root: Path, files: Mapping[str, Path]) -> dict[str, list[Row]]:
    return {
        split: [
            Row(f"{FOLDER}/{path}", int(class_id))
            for _, class_id, _, path in read_table(
                root / FOLDER / f"Ebay_{split}.txt", columns=4, header_lines=1
            )
        ]
        for split in ("train", "test")
    }


SPEC = DatasetSpec(
    name="sop",
    title="Stanford Online Products",
    alias="sop",
    files=(
        OfficialFile(
            "Stanford_Online_Products.zip",
            md5="7f73d41a2f44250d4779881525aea32e",
            url="ftp://cs.stanford.edu/cs/cvgl/Stanford_Online_Products.zip",
        ),
    ),
    read_splits=read_splits,
    standard_counts={"train": 59551, "test": 60502},
    recipe_resize=(256, 256),
    experiment="paper_sop",
    paper_recall={1: 81.1, 10: 91.7, 100: 96.3, 1000: 98.8},
)
