"""Decoding every image a prepared dataset lists: broken files, exact duplicates and
near-duplicates (``near_duplicates``), found before training does.

Two listed images are exact duplicates when they decode to the same pixels (RGB, same size),
whatever their files. Duplicates matter to retrieval: a query's copy under another class is its
nearest neighbour, a certain miss, and a search that drops "the first neighbour" instead of the
query keeps the query itself, a false hit (docs/reference/metrics.md).
"""

import hashlib
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

from PIL import Image

from dml_bench.data.decode import to_rgb
from dml_bench.data.prepare.near_duplicates import THRESHOLD, Near, near_duplicates, perceptual_hash
from dml_bench.data.split_files import read_split, split_file, split_names
from dml_bench.runtime.errors import UserError
from dml_bench.runtime.progress import progress_bar


class BadImage(NamedTuple):
    path: str
    reason: str


class Listed(NamedTuple):
    """One line of a split file."""

    split: str
    path: str
    label: int


# The kinds of exact duplicates: two listings of one content in the same split and class, in
# the same split under different classes, or in two splits.
DUPLICATE_KINDS = ("within a class", "across classes", "across splits")


class Verification(NamedTuple):
    checked: int  # distinct image files decoded
    bad: list[BadImage]
    duplicates: dict[str, list[list[Listed]]]  # kind -> groups of identical listings, in file order
    near: dict[str, list[Near]] | None  # kind -> pairs of near-duplicate listings (None: not searched)


def verify_images(root: str | Path, near_threshold: int | None = THRESHOLD, allow_outside_root: bool = False
                  ) -> Verification:
    """Decode (to RGB) every image listed in ``root/splits/*.csv``; report the bad ones, the
    groups of exact duplicates of each kind and, unless ``near_threshold`` is None, the pairs of
    near-duplicates whose perceptual hashes are at most that many bits apart. Paths outside
    ``root`` are refused unless ``allow_outside_root``."""
    root = Path(root)
    if not split_names(root):
        where = "does not exist" if not root.exists() else "has no split files (splits/*.csv)"
        raise UserError(f"--verify: {root} {where}, so there is nothing to verify; pass the folder that holds "
                        "splits/train.csv and splits/test.csv (docs/datasets.md).")
    listed = [Listed(split, row.path, row.label) for split in split_names(root)
              for row in read_split(split_file(root, split), allow_outside_root)]
    paths = list(dict.fromkeys(entry.path for entry in listed))
    bad, content, hashes = [], {}, {}
    for path in progress_bar(paths, desc="verifying images", unit=" images"):
        try:
            with Image.open(root / path) as image:
                rgb = to_rgb(image)  # the file itself when it is RGB already: read it while open
                content[path] = hashlib.sha256(repr(rgb.size).encode() + rgb.tobytes()).digest()
        except Exception as err:  # any failure to decode makes the image unusable
            bad.append(BadImage(path, f"{type(err).__name__}: {err}"))
            continue
        if near_threshold is not None:
            hashes[path] = perceptual_hash(rgb)
    same = defaultdict(list)
    for entry in listed:
        if entry.path in content:
            same[content[entry.path]].append(entry)
    near = None if near_threshold is None else near_duplicates(listed, hashes, content, near_threshold)
    return Verification(len(paths), bad, duplicate_groups([group for group in same.values() if len(group) > 1]), near)


def duplicate_groups(groups: list[list[Listed]]) -> dict[str, list[list[Listed]]]:
    """Each kind's groups: the listings of one content that make it that kind of duplicate."""
    found = {kind: [] for kind in DUPLICATE_KINDS}
    for group in groups:
        by_class, by_split = defaultdict(list), defaultdict(list)
        for entry in group:
            by_class[entry.split, entry.label].append(entry)
            by_split[entry.split].append(entry)
        found["within a class"] += [same for same in by_class.values() if len(same) > 1]
        found["across classes"] += [entries for entries in by_split.values()
                                    if len({entry.label for entry in entries}) > 1]
        if len(by_split) > 1:
            found["across splits"].append(group)
    return found


def describe_duplicates(duplicates: dict[str, list[list[Listed]]], examples: int = 3) -> list[str]:
    """Report lines: per kind, the number of groups and images, and the first few groups."""
    lines = ["Exact duplicates (images that decode to the same pixels):"]
    for kind, groups in duplicates.items():
        images = sum(len(group) for group in groups)
        lines.append(f"  {kind}: {len(groups)} groups, {images} images" if groups else f"  {kind}: none")
        for group in groups[:examples]:
            lines.append("    " + " = ".join(f"{entry.path} ({entry.split}, class {entry.label})" for entry in group))
    return lines
