"""Finding a dataset's official files: cached in ``downloads/``, in a folder, or at a URL."""

import logging
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from dml_bench.data.prepare.download import check_md5, download
from dml_bench.data.prepare.spec import DatasetSpec, OfficialFile
from dml_bench.runtime.errors import UserError

log = logging.getLogger(__name__)

URL_SCHEMES = ("http", "https", "ftp")


def is_url(source: str) -> bool:
    return urlsplit(source).scheme in URL_SCHEMES


def obtain_files(
    spec: DatasetSpec, downloads: Path, source: str | None, *, skip_checksum: bool
) -> Mapping[str, Path]:
    """Local paths of all the official files, downloading into ``downloads`` what is remote.

    A file already in ``downloads`` is used first. Without ``source`` the others come from their
    official URLs; ``source`` is a folder or a URL prefix holding them under their official names.
    Every file is checked against its official MD5 unless ``skip_checksum``.
    """
    places = {f.name: _locate(f, downloads, source) for f in spec.files}
    missing = [name for name, place in places.items() if place is None]
    if missing:
        raise UserError(_missing_message(spec, missing, downloads, source))
    local = {}
    for f in spec.files:
        md5 = None if skip_checksum else f.md5
        place = places[f.name]
        if isinstance(place, Path):
            check_md5(place, md5, name=str(place), fix="Replace it with the official file.")
            local[f.name] = place
        else:
            log.info("Downloading %s to %s", place, downloads)
            local[f.name] = downloads / f.name
            download(place, local[f.name], md5=md5)
    return local


def _locate(f: OfficialFile, downloads: Path, source: str | None) -> Path | str | None:
    """Where the file is: a local Path, a URL, or None when it cannot be found."""
    if (downloads / f.name).is_file():
        return downloads / f.name
    if source is None:
        return f.url
    if is_url(source):
        return f"{source.rstrip('/')}/{f.name}"
    folder = Path(source)
    if not folder.is_dir():
        raise UserError(
            f"--source {source} is neither a folder nor an http(s)/ftp URL. Pass the folder or "
            "the URL prefix that holds the official files."
        )
    return next((p for p in map(folder.joinpath, (f.name, *f.folder_paths)) if p.is_file()), None)


def _missing_message(spec: DatasetSpec, missing: list[str], downloads: Path, source) -> str:
    names = ", ".join(missing)
    them = "them" if len(missing) > 1 else "it"
    if source is None:
        return (
            f"{spec.title} needs {names}, which cannot be downloaded automatically. Obtain "
            f"{them} ({spec.where_to_get}) and put {them} in {downloads}/, or pass --source with "
            "a folder or URL prefix that holds the files under these names."
        )
    return (
        f"{spec.title}: {names} not found in {source} (nor in {downloads}/). Put the official "
        "files there under these names, or pass another --source."
    )
