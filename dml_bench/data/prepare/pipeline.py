"""The one flow every benchmark goes through: obtain, extract, read, check, write, mark."""

import logging
from pathlib import Path

from dml_bench.data.prepare import cars196, cub200, inshop, sop
from dml_bench.data.prepare.extract import is_archive, safe_extract
from dml_bench.data.prepare.sources import obtain_files
from dml_bench.data.prepare.spec import DatasetSpec
from dml_bench.data.prepare.splits import SPLITS_DIR, check_counts, check_images_exist, write_splits
from dml_bench.errors import UserError

log = logging.getLogger(__name__)

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec for spec in (cub200.SPEC, cars196.SPEC, sop.SPEC, inshop.SPEC)
}
DOWNLOADS_DIR = "downloads"
MARKER = ".prepared"


def prepare_dataset(
    name: str,
    root: str | Path,
    *,
    source: str | None = None,
    skip_checksum: bool = False,
    check_standard_counts: bool = True,
) -> None:
    """Prepare benchmark ``name`` in ``root``: ``root/splits/*.csv`` with images under ``root``.

    ``source`` is a folder or URL prefix holding the official files (default: official URLs and
    ``root/downloads/``). The marker ``root/.prepared``, written last, makes a second call a
    no-op. With ``check_standard_counts`` (always on from the command line) the images per split
    must match the full official dataset: a count check cannot tell a miniature test dataset from
    an incomplete copy, so the tests turn it off here rather than the CLI growing a flag for it.
    """
    spec = _spec(name)
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
    (root / MARKER).write_text(spec.name + "\n")
    log.info(
        "%s is ready in %s: %s", spec.title, root,
        ", ".join(f"{split} {len(rows):,} images" for split, rows in splits.items()),
    )


def _spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise UserError(f"Unknown dataset {name!r}: choose one of {', '.join(DATASETS)}.")
    return DATASETS[name]


def _is_prepared(spec: DatasetSpec, root: Path) -> bool:
    marker = root / MARKER
    if not marker.is_file():
        return False
    prepared = marker.read_text().strip()
    if prepared != spec.name:
        raise UserError(
            f"{root} already holds the prepared dataset {prepared!r} (see {marker}). Pass another "
            f"--root for {spec.name}."
        )
    return all((root / SPLITS_DIR / f"{split}.csv").is_file() for split in spec.standard_counts)
