"""Safe extraction of tar and zip archives (CVE-2007-4559, CVE-2025-4517).

Every member is checked before it is written: an absolute name, a ``..`` component, a link whose
target lies outside the destination, or a device/FIFO member stops the extraction with an error
naming the member. The names are checked as text and then as the file system resolves them,
through the links extracted before: a chain of links that each look inside (``x/y -> ..``, then
``x/y/z -> ..``) cannot lead out, on any Python ``requires-python`` allows (3.10.0 to 3.10.11 and
3.11.0 to 3.11.3 have no tarfile filter at all, and the filters before 3.11.13 miss such chains).
On Pythons that have it, tarfile's own ``filter="data"`` runs as well; our checks come first so
that every Python refuses the same archives.

Decompression bombs: the members' sizes (tar headers, the zip directory; tarfile and zipfile write
no more than they declare) are added up before each is written, and an archive whose content
would exceed ``MAX_TOTAL_BYTES``, or ``MAX_RATIO`` times its own size beyond ``RATIO_FLOOR_BYTES``,
is refused: the benchmarks' archives hold JPEGs, which barely compress further.
"""

import posixpath
import tarfile
import zipfile
import zlib
from pathlib import Path
from typing import NoReturn

from dml_bench.runtime.errors import UserError
from dml_bench.runtime.progress import progress_bar

MAX_TOTAL_BYTES = 100 * 2**30
MAX_RATIO = 20
RATIO_FLOOR_BYTES = 64 * 2**20  # small archives (annotations, text) may compress better than 20:1
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


class _Budget:
    """The extracted bytes so far, refused past the bounds of the module's docstring."""

    def __init__(self, archive: Path):
        self.archive, self.total = archive, 0
        self.limit = min(MAX_TOTAL_BYTES, max(RATIO_FLOOR_BYTES, MAX_RATIO * archive.stat().st_size))

    def add(self, member: str, size: int) -> None:
        self.total += size
        if self.total > self.limit:
            raise UserError(
                f"Refusing to extract {self.archive}: with its member {member!r} its content reaches "
                f"{_gib(self.total)} from {_gib(self.archive.stat().st_size)} of archive, past the bound of "
                f"{_gib(self.limit)} (at most {MAX_RATIO} times the archive's size and {_gib(MAX_TOTAL_BYTES)}). "
                "The benchmarks' archives hold images that do not compress so well: this file is not the "
                "official one (a decompression bomb?). Delete it and what was extracted, and obtain the official file."
            )


def _gib(nbytes: int) -> str:
    return f"{nbytes / 2**30:.2f} GiB"


def _extract_tar(archive: Path, dest: Path) -> None:
    # Member by member, so that a gzipped archive is decompressed once.
    budget = _Budget(archive)
    with tarfile.open(archive) as tar:
        for member in progress_bar(tar, desc=f"extracting {archive.name}", unit=" files"):
            _check_tar_member(member, archive)
            _check_resolved(member, archive, dest)
            budget.add(member.name, member.size)
            tar.extract(member, dest, **_TAR_FILTER)


def _extract_zip(archive: Path, dest: Path) -> None:
    # zipfile never creates links, so checking the names (and where they resolve) is enough.
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        budget = _Budget(archive)
        for info in members:  # the directory declares every size: refused before anything is written
            budget.add(info.filename, info.file_size)
        for info in progress_bar(members, desc=f"extracting {archive.name}", unit=" files"):
            _check_name(info.filename, archive)
            _check_inside(dest / info.filename, dest, archive, info.filename)
            zf.extract(info, dest)


def _check_resolved(member: tarfile.TarInfo, archive: Path, dest: Path) -> None:
    """Refuse a member whose destination, or link target, resolves outside ``dest`` through the
    links extracted so far."""
    path = dest / member.name
    _check_inside(path, dest, archive, member.name)
    if member.issym():
        _check_inside(path.parent.resolve() / member.linkname, dest, archive, member.name,
                      f"is a link to {member.linkname!r}, which the links before it lead outside the folder")
    elif member.islnk():
        _check_inside(dest / member.linkname, dest, archive, member.name,
                      f"is a hard link to {member.linkname!r}, which the links before it lead outside the folder")


def _check_inside(path: Path, dest: Path, archive: Path, member: str,
                  why: str = "lands outside the folder through the links extracted before it") -> None:
    root = dest.resolve()
    resolved = path.resolve()
    if resolved != root and root not in resolved.parents:
        _refuse(archive, member, why)


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
