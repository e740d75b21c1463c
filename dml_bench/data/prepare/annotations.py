"""From the official annotations to split rows, and the checks before the split files are written.

The rows end in the prepared format of ``dml_bench.data.split_files`` (``splits/<split>.csv``,
header ``path,label``), written there by ``write_splits``.
"""

from collections.abc import Iterable, Mapping
from pathlib import Path

from dml_bench.data.split_files import Row
from dml_bench.runtime.errors import UserError

Splits = Mapping[str, list[Row]]


def split_by_class(rows: Iterable[Row], last_train_class: int) -> dict[str, list[Row]]:
    """Zero-shot split of CUB and Cars: classes up to ``last_train_class`` train, others test."""
    rows = list(rows)
    return {
        "train": [row for row in rows if row.label <= last_train_class],
        "test": [row for row in rows if row.label > last_train_class],
    }


def read_table(path: Path, columns: int, header_lines: int = 0) -> list[list[str]]:
    """Rows of a whitespace-separated text file (any run of spaces separates columns)."""
    if not path.is_file():
        raise UserError(
            f"{path} is missing: the archive was not extracted completely or is not the official "
            "one. Delete the dataset folder's extracted files and prepare again."
        )
    lines = path.read_text().splitlines()[header_lines:]
    rows = [line.split(maxsplit=columns - 1) for line in lines if line.strip()]
    for number, row in enumerate(rows, start=header_lines + 1):
        if len(row) != columns:
            raise UserError(
                f"{path}, line {number}: expected {columns} columns, found {len(row)}. The file is "
                "corrupt or not the official one: obtain the official archive again."
            )
    return rows


def check_images_exist(root: Path, splits: Splits) -> None:
    paths = (row.path for rows in splits.values() for row in rows)
    missing = [path for path in paths if not (root / path).is_file()]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        shown = ", ".join(missing[:5]) + more
        raise UserError(
            f"{len(missing)} images listed by the dataset's annotations are missing under {root}: "
            f"{shown}. The archive is incomplete: obtain the official one and prepare again."
        )


def check_counts(title: str, splits: Splits, standard: Mapping[str, int]) -> None:
    """Compare the number of images per split with the standard numbers of the full dataset."""
    found = {name: len(rows) for name, rows in splits.items()}
    if found != dict(standard):
        raise UserError(
            f"{title} has {_describe(found)} images, but the full dataset has "
            f"{_describe(standard)}. The files are incomplete or not the official release: "
            "obtain the official files and prepare again (for a dataset of your own, write the "
            "split files yourself and use dataset=csv)."
        )


def _describe(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{name} {count:,}" for name, count in counts.items())
