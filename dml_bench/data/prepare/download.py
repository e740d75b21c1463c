"""Resumable downloads and MD5 checks, with urllib only.

A download streams into ``<dest>.part`` and gets its final name only once it is complete and its
checksum is verified, so a file under its official name in ``downloads/`` is always whole. When the
transfer breaks off, the ``.part`` file stays: the next attempt (at once when the transfer made
progress, or on the next run) asks for the rest with an HTTP ``Range`` header. A server that
ignores the range (status 200 instead of 206, or any FTP server) gets the file from the start.
"""

import hashlib
import logging
import re
import urllib.request
from http.client import HTTPException, IncompleteRead
from pathlib import Path
from urllib.error import HTTPError, URLError

from dml_bench.runtime.errors import UserError
from dml_bench.runtime.progress import progress_bar

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
TIMEOUT_S = 60
MAX_RESUMES = 20


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def check_md5(path: Path, expected: str | None, *, name: str, fix: str) -> None:
    """Raise a UserError when ``path`` does not have the official MD5 (``expected``).

    ``fix`` finishes the message: what the user should do about this particular copy.
    ``expected=None`` (no official checksum, or --skip-checksum) accepts any file.
    """
    if expected is None:
        return
    actual = file_md5(path)
    if actual != expected:
        raise UserError(
            f"{name} has MD5 {actual}, but the official file has MD5 {expected}: it is corrupt "
            f"or not the official release. {fix} If you trust this copy, pass --skip-checksum."
        )


def download(url: str, dest: Path, *, md5: str | None) -> None:
    """Fetch ``url`` into ``dest``, resuming a previous ``dest.part``; verify ``md5`` if given."""
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(MAX_RESUMES + 1):
        before = _size(part)
        try:
            _transfer(url, part)
            break
        except HTTPError as err:
            if err.code == 416 and before:  # the .part is not a prefix of this file: restart
                part.unlink()
                continue
            raise UserError(
                f"Could not download {url}: HTTP {err.code} {err.reason}. Check the address "
                "(--source is a URL prefix that holds the files under their official names)."
            ) from err
        except (URLError, HTTPException, OSError) as err:
            if _size(part) == before:  # no progress: give up
                raise UserError(
                    f"Could not download {url}: {getattr(err, 'reason', err)}. "
                    f"{_kept_hint(part)}Check the network and the address, then run again."
                ) from err
        log.info("Transfer of %s broke off; resuming", url)
    else:
        raise UserError(f"Downloading {url} kept breaking off. {_kept_hint(part)}Run again later.")
    try:
        check_md5(
            part, md5, name=f"The file downloaded from {url}",
            fix="It was deleted; run again to download it anew.",
        )
    except UserError:
        part.unlink()
        raise
    part.replace(dest)


def _kept_hint(part: Path) -> str:
    return f"The partial file {part} is kept and the next run resumes it. " if part.exists() else ""


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _transfer(url: str, part: Path) -> None:
    """One request appending to ``part``; raises when the transfer ends before the file does."""
    offset = _size(part)
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as r:
        if offset and not _resumes_at(r, offset):
            offset = 0
        total = _total_size(r, offset)
        with open(part, "ab" if offset else "wb") as out, progress_bar(
            total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
            desc=part.name.removesuffix(".part"),
        ) as bar:
            while chunk := r.read(CHUNK_BYTES):
                out.write(chunk)
                bar.update(len(chunk))
    # http.client returns a short body without an error when the connection drops early.
    if total is not None and _size(part) < total:
        raise IncompleteRead(b"", total - _size(part))


def _resumes_at(response, offset: int) -> bool:
    """Whether the server sent the bytes from ``offset`` on (206 with a matching Content-Range)."""
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    return getattr(response, "status", None) == 206 and bool(match) and int(match[1]) == offset


def _total_size(response, offset: int) -> int | None:
    """The size of the whole file, when the server says it."""
    match = re.search(r"/(\d+)$", response.headers.get("Content-Range", ""))
    if offset and match:
        return int(match[1])
    length = response.headers.get("Content-Length")
    return offset + int(length) if length is not None else None
