"""The one flow every benchmark goes through: obtain, extract, read, check, write, mark."""

import logging
from pathlib import Path

from dml_bench.data.benchmarks import benchmark
from dml_bench.data.prepare.annotations import check_counts, check_images_exist
from dml_bench.data.prepare.extract import is_archive, safe_extract
from dml_bench.data.prepare.sources import obtain_files
from dml_bench.data.prepare.spec import DatasetSpec
from dml_bench.data.split_files import MARKER, read_marker, split_file, write_marker, write_splits
from dml_bench.runtime.errors import UserError

log = logging.getLogger(__name__)

DOWNLOADS_DIR = "downloads"


def prepare_dataset(
    name: str,
    root: str | Path,
    *,
    source: str | None = None,
    skip_checksum: bool = False,
    check_standard_counts: bool = True,
) -> None:
    """Prepare benchmark ``name`` (its name or alias) in ``root``: ``root/splits/*.csv`` with
    images under ``root``, in the format of ``dml_bench.data.split_files``.

    ``source`` is a folder or URL prefix holding the official files (default: official URLs and
    ``root/downloads/``). The marker ``root/.prepared``, written last, makes a second call a
    no-op. With ``check_standard_counts`` (always on from the command line) the images per split
    must match the full official dataset: a count check cannot tell a miniature test dataset from
    an incomplete copy, so the tests turn it off here rather than the CLI growing a flag for it.
    """
    spec = benchmark(name)
    root = Path(root)
    if _is_prepared(spec, root):
        log.info("%s is already prepared in %s (delete %s to redo it)", spec.title, root, MARKER)
        return
    files = obtain_files(spec, root / DOWNLOADS_DIR, source, skip_checksum=skip_checksum)
    for file_name, path in files.items():
        if is_archive(file_name):
            log.info("Extracting %s into %s", path, root)
            safe_extract(path, root)
    splits = spec.read_splits(root, files)
    check_images_exist(root, splits)
    if check_standard_counts:
        check_counts(spec.title, splits, spec.standard_counts)
    write_splits(root, splits)
    write_marker(root, spec.name)
    log.info(
        "%s is ready in %s: %s", spec.title, root,
        ", ".join(f"{split} {len(rows):,} images" for split, rows in splits.items()),
    )


def _is_prepared(spec: DatasetSpec, root: Path) -> bool:
    marker = read_marker(root)
    if marker is None:
        return False
    if marker.name != spec.name:
        raise UserError(
            f"{root} already holds the prepared dataset {marker.name!r} (see {root / MARKER}). Pass "
            f"another --root for {spec.name}."
        )
    return all(split_file(root, split).is_file() for split in spec.splits)
