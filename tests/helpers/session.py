"""The folder a test session writes to, under pytest's basetemp (tests/conftest.py sets it at the
start of the session), and the glyph data the training tests share, prepared there once: runs
write under the session's temporary folders, never into the checkout."""

import csv
from collections import defaultdict
from pathlib import Path

from hydra.utils import instantiate

from tests.helpers.config import compose_config

# A smaller rendering of the embedded glyph data than the quickstart's (one rendering per font),
# set as overrides of configs/dataset/glyphs.yaml so that runs given them find it prepared.
GLYPHS_PREPARE = ["dataset.prepare.renderings_per_font=1", "dataset.prepare.min_per_class=5"]

# The images of each class that a subset of the glyphs lists (glyphs_subset), per split.
SUBSET_PER_CLASS = {"train": 6, "test": 4}

_folder: Path | None = None
_glyphs: Path | None = None
_subset: Path | None = None


def start(folder: Path) -> None:
    global _folder, _glyphs, _subset
    _folder, _glyphs, _subset = Path(folder), None, None


def folder() -> Path:
    if _folder is None:
        raise RuntimeError("no test session folder: run the tests with pytest (tests/conftest.py sets it)")
    return _folder


def glyphs_root() -> Path:
    """The shared glyph data, prepared on first use by the config's own ``dataset.prepare``."""
    global _glyphs
    if _glyphs is None:
        root = folder() / "glyphs"
        instantiate(compose_config(["dataset=glyphs", *GLYPHS_PREPARE]).dataset.prepare, root=str(root))
        _glyphs = root
    return _glyphs


def glyphs_subset(folder: Path) -> Path:
    """A dataset folder whose split files list a subset of the shared glyphs, every class with
    SUBSET_PER_CLASS of its images at most (6 in train, 4 in test); the images are linked, not copied."""
    glyphs = glyphs_root()
    (folder / "splits").mkdir(parents=True, exist_ok=True)
    if not (folder / "images").exists():
        (folder / "images").symlink_to(glyphs / "images")
    for split, keep in SUBSET_PER_CLASS.items():
        with open(glyphs / "splits" / f"{split}.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        kept, seen = [], defaultdict(int)
        for row in rows:
            seen[row["label"]] += 1
            if seen[row["label"]] <= keep:
                kept.append(row)
        with open(folder / "splits" / f"{split}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["path", "label"])
            writer.writeheader()
            writer.writerows(kept)
    return folder


def quickstart_root() -> Path:
    """The data of the session's quickstart-sized runs (tests.helpers.runs.fast_overrides): one
    subset of the shared glyphs, written on first use: every class of theirs, about a quarter of
    their images to train on and embed."""
    global _subset
    if _subset is None:
        _subset = glyphs_subset(folder() / "glyphs_subset")
    return _subset
