"""Cars196 (Stanford Cars): 16,185 photos of 196 car models.

The zero-shot split takes classes 1-98 for training and 99-196 for testing; the ``test`` field of
the annotations is the classification split and is not used.
"""

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from scipy.io import loadmat

from dml_bench.data.prepare.annotations import split_by_class
from dml_bench.data.prepare.spec import DatasetSpec, OfficialFile
from dml_bench.data.split_files import Row
from dml_bench.runtime.errors import UserError

ANNOTATIONS = "cars_annos.mat"


def read_splits(root: Path, files: Mapping[str, Path]) -> dict[str, list[Row]]:
    path = files[ANNOTATIONS]
    try:
        annotations = loadmat(path)["annotations"]
    except (ValueError, OSError, KeyError) as err:
        raise UserError(
            f"{path} is not the official {ANNOTATIONS} (no readable 'annotations' struct: {err}). "
            "Obtain the official file."
        ) from err
    return split_by_class(annotation_rows(annotations), last_train_class=98)


def annotation_rows(annotations) -> list[Row]:
    """Rows from the ``annotations`` struct array as loadmat returns it.

    Works with every loadmat style: a 1xN (or Nx1, or squeezed 1-D) array of records whose fields
    are nested arrays (``array(['car_ims/000001.jpg'])``, ``array([[1]])``) or plain scalars.
    """
    return [
        Row(str(_scalar(record["relative_im_path"])), int(_scalar(record["class"])))
        for record in np.asarray(annotations).reshape(-1)
    ]


def _scalar(value):
    return np.asarray(value).reshape(-1)[0]


SPEC = DatasetSpec(
    name="cars196",
    title="Cars196",
    alias="cars",
    files=(
        OfficialFile("car_ims.tgz", md5="d5c8f0aa497503f355e17dc7886c3f14", url=None),
        OfficialFile(ANNOTATIONS, md5="b407c6086d669747186bd1d764ff9dbc", url=None),
    ),
    read_splits=read_splits,
    standard_counts={"train": 8054, "test": 8131},
    recipe_resize=(256, 256),
    experiment="paper_cars",
    paper_recall={1: 89.3, 2: 93.9, 4: 96.6, 8: 98.4, 16: 99.3, 32: 99.7},
    where_to_get="the historical Stanford links are dead; copies circulate on dataset mirrors",
)
