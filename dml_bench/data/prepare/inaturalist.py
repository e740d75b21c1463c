"""iNaturalist 2018 with the class-disjoint retrieval split of Smooth-AP (Brown et al., ECCV 2020).

The images are the competition's ``train_val2018.tar.gz`` (its train and val images, 461,939 in
8,142 species, under ``train_val2018/<supercategory>/<category id>/<image>.jpg``). The split is
Smooth-AP's ``Inat_dataset_splits.zip``: ``Inaturalist_train_set1.txt`` and
``Inaturalist_test_set1.txt`` list image paths, one a line, relative to the folder the images were
extracted into; 5,690 species train and 2,452 others test. An image's class is its category id,
the last folder of its path, as Smooth-AP's, ROADMAP's and Recall@k Surrogate's loaders read it.
"""

from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from dml_bench.data.prepare.annotations import read_table
from dml_bench.data.prepare.spec import DatasetSpec, OfficialFile
from dml_bench.data.split_files import Row
from dml_bench.runtime.errors import UserError

SPLITS_ARCHIVE = "Inat_dataset_splits.zip"
SPLITS_FOLDER = "Inat_dataset_splits"
SPLIT_FILES = {"train": "Inaturalist_train_set1.txt", "test": "Inaturalist_test_set1.txt"}


def read_splits(root: Path, files: Mapping[str, Path]) -> dict[str, list[Row]]:
    return {
        split: [_row(path, root / SPLITS_FOLDER / name) for (path,) in read_table(root / SPLITS_FOLDER / name, 1)]
        for split, name in SPLIT_FILES.items()
    }


def _row(path: str, listing: Path) -> Row:
    """``train_val2018/Plantae/7477/<hash>.jpg`` -> that path, class 7477."""
    path = path.strip()
    parts = PurePosixPath(path).parts
    if len(parts) < 3 or not parts[-2].isdigit():
        raise UserError(
            f"{listing}: {path!r} is not an image path like train_val2018/Plantae/7477/<name>.jpg. "
            f"Obtain Smooth-AP's official {SPLITS_ARCHIVE}."
        )
    return Row(path, int(parts[-2]))


SPEC = DatasetSpec(
    name="inaturalist",
    title="iNaturalist 2018 (Smooth-AP split)",
    alias="inat",
    files=(
        OfficialFile(
            "train_val2018.tar.gz",
            md5="b1c6952ce38f31868cc50ea72d066cc3",
            url="https://ml-inat-competition-datasets.s3.amazonaws.com/2018/train_val2018.tar.gz",
        ),
        OfficialFile(SPLITS_ARCHIVE, md5=None, url=None),
    ),
    read_splits=read_splits,
    standard_counts={"train": 325846, "test": 136093},
    recipe_resize=256,
    experiment="ce_inat",
    paper_recall={},
    recall_ks=(1, 4, 16, 32),
    where_to_get=(
        f"the images download on their own; the split, {SPLITS_ARCHIVE}, is Smooth-AP's, shared on "
        "Google Drive and linked from github.com/Andrew-Brown1/Smooth_AP and "
        "github.com/yash0307/RecallatK_surrogate (README, 'splits')"
    ),
)
