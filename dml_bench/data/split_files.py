"""The prepared format every dataset ends in, and the one place that reads and writes it.

A prepared folder ``<root>`` holds one CSV per split, ``<root>/splits/<split>.csv``, and the
marker ``<root>/.prepared``:

- a split file starts with the header ``path,label``; each row is one image: ``path`` relative to
  ``<root>`` (POSIX separators), ``label`` the dataset's own integer class id. ``read_split`` is
  the reader of every split file (the training dataset, ``--verify``, ``--cache``, the tests);
  ``write_splits`` the writer of every preparer (the benchmarks, the embedded glyphs).
- the marker is written last, once everything else is in place: its first line is the name of
  the dataset prepared there, an optional second line the JSON of the settings it was made with
  (the embedded glyphs record theirs, so other settings make them again).

Every file appears under its final name only once complete (written to ``<name>.<pid>.tmp``,
then renamed), so an interrupted preparation never leaves a truncated file that looks finished,
and two processes preparing the same folder at once never write into the same file.
"""

import csv
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

from dml_bench.runtime.errors import UserError

HEADER = ("path", "label")
SPLITS_DIR = "splits"
MARKER = ".prepared"


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


def listed_images(root: str | Path) -> list[str]:
    """Every image path the split files of ``root`` list, each once, split by split (sorted)."""
    splits = split_names(root)
    if not splits:
        raise UserError(f"{Path(root) / SPLITS_DIR} holds no split files: prepare the dataset first.")
    return list(dict.fromkeys(row.path for split in splits for row in read_split(split_file(root, split))))


def read_split(path: str | Path) -> list[Row]:
    """The rows of one split file, in file order.

    The accepted format: a CSV file whose first line is a header naming the columns ``path`` and
    ``label`` (``path,label``; in another order, or with more columns, the others are ignored),
    then one line per image, ``path`` relative to the dataset folder and ``label`` an integer.
    Blank lines are skipped. A file without those columns, with a label that is not an integer or
    with no image at all is a UserError naming the file and line; a missing file is a
    FileNotFoundError (callers that can say how to prepare the dataset check first).
    """
    path = Path(path)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not set(HEADER) <= set(reader.fieldnames):
            raise UserError(f"{path} must start with the header '{','.join(HEADER)}', got {reader.fieldnames}.")
        rows = []
        for record in reader:
            image, label = record[HEADER[0]], record[HEADER[1]]
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


def needs_preparing(root: str | Path, train_split: str) -> bool:
    """Whether a generated dataset's preparer (the embedded glyphs') must run on ``root``: its
    training split is missing, or ``root`` holds a marker, which the preparer compares with its
    own name and settings (a no-op when they match, the data made again when not, so an old
    version is never used silently). Split files without a marker were written by hand and are
    used as they are."""
    return not split_file(root, train_split).exists() or (Path(root) / MARKER).is_file()


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
