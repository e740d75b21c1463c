"""Safe extraction of tar and zip archives (CVE-2007-4559).

Every member is checked before it is written: an absolute name, a ``..`` component, a link whose
target lies outside the destination, or a device/FIFO member stops the extraction with an error
naming the member. On Pythons that have it, tarfile's own ``filter="data"`` runs as well; our checks
come first so that every Python refuses the same archives.
"""

import posixpath
import tarfile
import zipfile
import zlib
from pathlib import Path
from typing import NoReturn

from dml_bench.runtime.errors import UserError
from dml_bench.runtime.progress import progress_bar

TAR_SUFFIXES = (".tgz", ".tar.gz", ".tar")
ZIP_SUFFIXES = (".zip",)
_TAR_FILTER = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
_FILTER_ERROR = getattr(tarfile, "FilterError", ())


def is_archive(name: str) -> bool:
    return name.endswith(TAR_SUFFIXES + ZIP_SUFFIXES)


def safe_extract(archive: Path, dest: Path) -> None:
    """Extract ``archive`` (tar, tar.gz or zip) into ``dest``, refusing unsafe members."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if archive.name.endswith(ZIP_SUFFIXES):
            _extract_zip(archive, dest)
        else:
            _extract_tar(archive, dest)
    except _FILTER_ERROR as err:  # only reached if tarfile's filter is stricter than our checks
        _refuse(archive, getattr(err.tarinfo, "name", "?"), f"was refused by tarfile ({err})")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error) as err:
        raise UserError(
            f"{archive} is not a readable archive ({err}). It is truncated or corrupt: "
            "delete it and obtain it again."
        ) from err


def _extract_tar(archive: Path, dest: Path) -> None:
    # Member by member, so that a gzipped archive is decompressed once.
    with tarfile.open(archive) as tar:
        for member in progress_bar(tar, desc=f"extracting {archive.name}", unit=" files"):
            _check_tar_member(member, archive)
            tar.extract(member, dest, **_TAR_FILTER)


def _extract_zip(archive: Path, dest: Path) -> None:
    # zipfile never creates links, so checking the names is enough.
    with zipfile.ZipFile(archive) as zf:
        for info in progress_bar(zf.infolist(), desc=f"extracting {archive.name}", unit=" files"):
            _check_name(info.filename, archive)
            zf.extract(info, dest)


def _check_tar_member(member: tarfile.TarInfo, archive: Path) -> None:
    _check_name(member.name, archive)
    if member.issym() or member.islnk():
        # A symlink's target is relative to its own folder, a hard link's to the archive root.
        base = posixpath.dirname(member.name) if member.issym() else ""
        target = posixpath.normpath(posixpath.join(base, member.linkname).replace("\\", "/"))
        if _escapes(target):
            _refuse(archive, member.name, f"is a link to {member.linkname!r}, outside the folder")
    elif not (member.isfile() or member.isdir()):
        _refuse(archive, member.name, "is a device or FIFO")


def _check_name(name: str, archive: Path) -> None:
    if _escapes(name) or ".." in name.replace("\\", "/").split("/"):
        _refuse(archive, name, "has an absolute path or a '..' component")


def _escapes(path: str) -> bool:
    """Whether a normalised archive path is absolute (POSIX or drive letter) or climbs out."""
    path = path.replace("\\", "/")
    return path.startswith("/") or path[1:2] == ":" or path == ".." or path.startswith("../")


def _refuse(archive: Path, member: str, why: str) -> NoReturn:
    raise UserError(
        f"Refusing to extract {archive}: its member {member!r} {why}, so it could write outside "
        "the dataset folder (CVE-2007-4559). The archive is corrupt or tampered with: obtain the "
        "official file again."
    )
