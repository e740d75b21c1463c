"""PKU VehicleID (Liu et al., CVPR 2016): 221,763 photos of 26,267 vehicles, seen from the front
or the back by road cameras.

The official ``VehicleID_V1.0.zip`` holds ``image/<7-digit id>.jpg`` and
``train_test_split/``: ``train_list.txt`` (13,134 vehicles) and the three test lists
``test_list_800.txt``, ``test_list_1600.txt`` and ``test_list_2400.txt`` (the small, medium and
large test sets, of that many vehicles), each line ``<image id> <vehicle id>``. Those folders sit
at the top of the archive or in one folder inside it; both layouts are read.

Each test set is its own split (``test_small``, ``test_medium``, ``test_large``); the dataset
config evaluates the one ``dataset.test_size`` names, leave-one-out over the whole set, as the
papers do (docs/reference/dataset-formats.md).
"""

from collections.abc import Mapping
from pathlib import Path

from dml_bench.data.prepare.annotations import read_table
from dml_bench.data.prepare.spec import DatasetSpec, OfficialFile
from dml_bench.data.split_files import Row
from dml_bench.runtime.errors import UserError

ARCHIVE = "VehicleID_V1.0.zip"
LISTS = "train_test_split"
# test size -> the official list of its vehicles
TEST_LISTS = {"small": "test_list_800.txt", "medium": "test_list_1600.txt", "large": "test_list_2400.txt"}
TEST_SIZES = tuple(TEST_LISTS)


def split_of_size(size: str) -> str:
    """The split of a test size: ``small`` -> ``test_small``."""
    return f"test_{size}"


def read_splits(root: Path, files: Mapping[str, Path]) -> dict[str, list[Row]]:
    base = _base(root)
    lists = {"train": "train_list.txt"} | {split_of_size(size): name for size, name in TEST_LISTS.items()}
    return {split: _rows(base, root, name) for split, name in lists.items()}


def _base(root: Path) -> Path:
    """The folder holding ``train_test_split/``: ``root`` or the one folder the archive made in it."""
    candidates = [root, *sorted(p for p in root.iterdir() if p.is_dir())]
    for base in candidates:
        if (base / LISTS).is_dir():
            return base
    raise UserError(
        f"No {LISTS}/ folder in {root} nor in a folder inside it: the archive is not the official "
        f"{ARCHIVE}. Obtain it again."
    )


def _rows(base: Path, root: Path, name: str) -> list[Row]:
    listing = base / LISTS / name
    rows = []
    for image_id, vehicle_id in read_table(listing, columns=2):
        if not (image_id.isdigit() and vehicle_id.isdigit()):
            raise UserError(f"{listing}: {image_id} {vehicle_id!r} is not '<image id> <vehicle id>'. "
                            f"Obtain the official {ARCHIVE}.")
        path = (base / "image" / f"{int(image_id):07d}.jpg").relative_to(root)
        rows.append(Row(path.as_posix(), int(vehicle_id)))
    return rows


SPEC = DatasetSpec(
    name="vehicleid",
    title="PKU VehicleID",
    alias="vehicleid",
    files=(OfficialFile(ARCHIVE, md5=None, url=None),),
    read_splits=read_splits,
    standard_counts={"train": 110178, "test_small": 6493, "test_medium": 13377, "test_large": 19777},
    recipe_resize=256,
    experiment="ce_vehicleid",
    paper_recall={},
    recall_ks=(1, 5),
    where_to_get=(
        "from its authors, who grant access by e-mail: pkuml.org/resources/pku-vehicleid.html"
    ),
)
