"""What a preparer knows about a benchmark: its official files, how to read its split, its size."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from dml_bench.data.prepare.splits import Row


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
    """A benchmark's preparer.

    ``read_splits(root, files)`` reads the annotations once the archives are extracted under
    ``root`` (``files`` maps each official name to its local path) and returns the rows of each
    split. ``standard_counts`` are the images per split of the full official dataset.
    ``where_to_get`` tells users where to find files that have no ``url``.
    """

    name: str
    title: str
    files: tuple[OfficialFile, ...]
    read_splits: Callable[[Path, Mapping[str, Path]], dict[str, list[Row]]]
    standard_counts: Mapping[str, int]
    where_to_get: str = ""
