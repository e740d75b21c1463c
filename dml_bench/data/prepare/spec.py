"""Everything the code knows about a benchmark, in one spec per benchmark.

Each benchmark's module (``cub200.py``, ``cars196.py``, ``sop.py``, ``inshop.py``,
``inaturalist.py``, ``vehicleid.py``) holds its
``SPEC``; ``dml_bench.data.benchmarks`` lists them and is where every other part of the code looks
a benchmark up (by name or alias): the preparer, the missing-dataset error, the image cache, the
results table's paper comparison, ``prepare_data`` and the Makefile. The Hydra files
``configs/dataset/<name>.yaml`` and ``configs/experiment/<experiment>.yaml`` must state some of
the same facts for Hydra (the dataset's name, splits and Resize, the paper's K values); a test
checks that they agree with the spec.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from dml_bench.data.split_files import Row

# torchvision's Resize argument: the shorter side, or (height, width); None: no Resize.
Resize = int | tuple[int, int] | None


@dataclass(frozen=True)
class OfficialFile:
    """One file of the official release, under its official name.

    ``md5`` is None where no official checksum is published; ``url`` is None where no official
    address still serves the file (the user must obtain it). ``folder_paths`` are other places,
    relative to a ``--source`` folder, where the official distribution keeps it.
    """

    name: str
    md5: str | None
    url: str | None
    folder_paths: tuple[str, ...] = ()


@dataclass(frozen=True)
class DatasetSpec:
    """A benchmark.

    ``name`` is its canonical name (the ``dataset=`` config, ``prepare_data NAME``, the folder
    ``data/NAME``); ``alias`` the short name also accepted wherever a benchmark is named
    (``make paper DATASET=cub``); ``title`` the name shown to users.

    ``files`` are the official files. ``read_splits(root, files)`` is the split rule: it reads the
    annotations once the archives are extracted under ``root`` (``files`` maps each official name
    to its local path) and returns the rows of each split. ``standard_counts`` are the images per
    split of the full official dataset (their keys are the splits). ``where_to_get`` tells users
    where to find files that have no ``url``.

    ``recipe_resize`` is the first Resize of the recipe (what ``--cache`` stores); ``experiment``
    the config ``experiment=...`` that runs the recipe on it; ``paper_recall`` the paper's
    cross-entropy Recall@K in % (ResNet-50, 2048-d; Boudiaf et al., ECCV 2020) by K, empty for a
    benchmark the paper did not run (iNaturalist, VehicleID). ``recall_ks`` are the K values that
    experiment evaluates: the paper's K, or for the others those their published numbers use
    (docs/reference/recipe.md).
    """

    name: str
    title: str
    alias: str
    files: tuple[OfficialFile, ...]
    read_splits: Callable[[Path, Mapping[str, Path]], dict[str, list[Row]]]
    standard_counts: Mapping[str, int]
    recipe_resize: Resize
    experiment: str
    paper_recall: Mapping[int, float]
    recall_ks: tuple[int, ...] = ()
    where_to_get: str = ""

    def __post_init__(self):
        if not self.recall_ks:  # the paper's K
            object.__setattr__(self, "recall_ks", tuple(self.paper_recall))

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.standard_counts)
