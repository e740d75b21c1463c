"""The prepared format every dataset ends in, and the one place that reads and writes it.

A prepared folder ``<root>`` holds one CSV per split, ``<root>/splits/<split>.csv``, and the
marker ``<root>/.prepared``:

- a split file starts with the header ``path,label``; each row is one image: ``path`` relative to
  ``<root>`` (POSIX separators), ``label`` the dataset's own integer class id. ``read_split`` is
  the reader of every split file (the training dataset, ``--verify``, ``--cache``, the tests);
  ``write_splits`` the writer of every preparer (the benchmarks, the embedded glyphs).
- every ``path`` stays inside ``<root>``: an absolute path, or one whose ``..`` climbs out, is
  refused naming the file and line, unless the reader is told ``allow_outside_root`` (the
  user's ``dataset.allow_outside_root=true``, for images that live elsewhere). The check is on
  the text: a symbolic link inside ``<root>`` is the folder owner's choice and is followed.
- the marker is written last, once everything else is in place: its first line is the name of
  the dataset prepared there, an optional second line the JSON of the settings it was made with
  (the embedded glyphs record theirs, so other settings make them again).

Preparing a folder holds an exclusive lock on ``<root>/.preparing.lock`` (``preparing``): two
runs that prepare the same folder at once take turns, and the second finds it prepared.

Every file appears under its final name only once complete (written to ``<name>.<pid>.tmp``,
then renamed), so an interrupted preparation never leaves a truncated file that looks finished,
and two processes preparing the same folder at once never write into the same file.
"""

import csv
import fcntl
import json
import os
import posixpath
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from dml_bench.runtime.errors import UserError

HEADER = ("path", "label")
SPLITS_DIR = "splits"
MARKER = ".prepared"
PREPARING_LOCK = ".preparing.lock"


class Row(NamedTuple):
    path: str
    label: int


class Marker(NamedTuple):
    """What ``<root>/.prepared`` says: the dataset's name and, if recorded, its settings."""

    name: str
    settings: dict | None = None


def split_file(root: str | Path, split: str) -> Path:
    return Path(root) / SPLITS_DIR / f"{split}.csv"


def split_names(root: str | Path) -> list[str]:
    """The splits with a file under ``root/splits/``, sorted."""
    return sorted(path.stem for path in (Path(root) / SPLITS_DIR).glob("*.csv"))


def listed_images(root: str | Path, allow_outside_root: bool = False) -> list[str]:
    """Every image path the split files of ``root`` list, each once, split by split (sorted)."""
    splits = split_names(root)
    if not splits:
        raise UserError(f"{Path(root) / SPLITS_DIR} holds no split files: prepare the dataset first.")
    return list(dict.fromkeys(row.path for split in splits
                              for row in read_split(split_file(root, split), allow_outside_root)))


def inside_root(image: str) -> bool:
    """Whether the listed ``image`` path, relative to the dataset folder, stays inside it."""
    normal = posixpath.normpath(image.replace("\\", "/"))
    return not (normal.startswith("/") or normal[1:2] == ":" or normal == ".." or normal.startswith("../"))


def read_split(path: str | Path, allow_outside_root: bool = False) -> list[Row]:
    """The rows of one split file, in file order.

    The accepted format: a CSV file whose first line is a header naming the columns ``path`` and
    ``label`` (``path,label``; in another order, or with more columns, the others are ignored),
    then one line per image, ``path`` relative to the dataset folder and ``label`` an integer.
    Blank lines are skipped; UTF-8, with or without a byte-order mark (Excel's "CSV UTF-8"). A file
    without those columns, with a label that is not an integer, with a path outside the dataset
    folder (``<path>/../..``; see the module's docstring) or with no image at all is a UserError
    naming the file and line; a missing file is a FileNotFoundError (callers that can say how to
    prepare the dataset check first).
    """
    path = Path(path)
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not set(HEADER) <= set(reader.fieldnames):
            raise UserError(f"{path} must start with the header '{','.join(HEADER)}', got {reader.fieldnames}.")
        rows = []
        for record in reader:
            image, label = record[HEADER[0]], record[HEADER[1]]
            if not allow_outside_root and not inside_root(image or ""):
                raise UserError(
                    f"{path}, line {reader.line_num}: the image path {image!r} leads outside the dataset folder "
                    f"{path.parent.parent} (an absolute path, or '..' that climbs out), so it is not read. Split "
                    "files list images relative to their dataset folder; if your images really live elsewhere, "
                    "allow it explicitly with dataset.allow_outside_root=true (prepare_data: --allow-outside-root)."
                )
            try:
                rows.append(Row(image, int(label)))
            except (TypeError, ValueError):
                raise UserError(f"{path}, line {reader.line_num}: the label {label!r} of {image!r} is not an "
                                "integer class id.") from None
    if not rows:
        raise UserError(f"{path} lists no images.")
    return rows


def write_splits(root: str | Path, splits: Mapping[str, Iterable[tuple[str, int]]]) -> None:
    """Write ``root/splits/<split>.csv`` for each split, each complete before it gets its name."""
    folder = Path(root) / SPLITS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in splits.items():
        with _atomic(folder / f"{name}.csv") as f:
            writer = csv.writer(f)
            writer.writerow(HEADER)
            writer.writerows(rows)


def write_marker(root: str | Path, name: str, settings: dict | None = None) -> None:
    """Mark ``root`` as holding the prepared dataset ``name`` (made with ``settings``)."""
    with _atomic(Path(root) / MARKER) as f:
        f.write(f"{name}\n")
        if settings is not None:
            f.write(json.dumps(settings, sort_keys=True) + "\n")


def read_marker(root: str | Path) -> Marker | None:
    """The marker of ``root``, or None where there is none.

    A marker of another format (such as the single JSON line earlier versions of the glyph
    preparer wrote) reads as a name that matches no dataset, so that dataset is prepared again.
    """
    path = Path(root) / MARKER
    if not path.is_file():
        return None
    lines = path.read_text().splitlines() or [""]
    settings = None
    if len(lines) > 1:
        try:
            settings = json.loads(lines[1])
        except ValueError:
            settings = None
    return Marker(lines[0].strip(), settings)


@contextmanager
def preparing(root: str | Path):
    """Hold ``root``'s preparation lock for the block, waiting for another process that holds it."""
    Path(root).mkdir(parents=True, exist_ok=True)
    descriptor = os.open(Path(root) / PREPARING_LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def write_text(path: str | Path, text: str, encoding: str | None = None) -> None:
    """A text file that appears under its name only once complete."""
    with _atomic(Path(path), encoding=encoding) as f:
        f.write(text)


class _atomic:
    """``with _atomic(path) as f``: write ``path.<pid>.tmp``, renamed to ``path`` if the block succeeds."""

    def __init__(self, path: Path, encoding: str | None = None):
        self.path, self.tmp, self.encoding = path, path.with_name(f"{path.name}.{os.getpid()}.tmp"), encoding

    def __enter__(self):
        self.file = open(self.tmp, "w", newline="", encoding=self.encoding)
        return self.file

    def __exit__(self, kind, value, traceback):
        self.file.close()
        if kind is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)
        return False
