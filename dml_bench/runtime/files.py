"""Files written safely and read back: JSON and JSON lines (runs, results and scripts share them).

An atomic write goes to a temporary file of a name no other writer uses
(``.NAME.<host>_<pid>.<random>.tmp`` beside the file), is flushed to disk, renamed over the file,
and the folder is flushed too, so that a reader sees the old file or the new one, never half of
one, and two processes writing the same file at once never write into each other's temporary
(the last rename wins). A process killed midway leaves its temporary behind:
``remove_stale_temporaries`` deletes those whose writer on this machine is no longer running, and
those of other machines (a shared file system) a day old.
"""

import json
import os
import re
import secrets
import socket
import time
from pathlib import Path

# .NAME.<host>_<pid>.<random>.tmp: whether its writer still runs tells whether it is being written.
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())
_TEMPORARY = re.compile(r"^\..+\.([A-Za-z0-9-]+)_(\d+)\.[0-9a-f]+\.tmp$")
_OTHER_HOSTS_STALE_S = 24 * 3600


def temporary_name(path: Path) -> Path:
    """A new temporary file name beside ``path``, for this process alone."""
    return path.with_name(f".{path.name}.{_HOST}_{os.getpid()}.{secrets.token_hex(4)}.tmp")


def atomic_write_bytes(path: Path, data: bytes | memoryview) -> None:
    """Write ``data`` to ``path`` atomically and durably (see the module's docstring). On failure
    the temporary file is removed and ``path`` is as it was."""
    path = Path(path)
    tmp = temporary_name(path)
    # O_EXCL: a name no one else has; 0o666 less the umask, as open() gives (tempfile's are 0o600).
    descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    sync_folder(path.parent)


def atomic_write_text(path: Path, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically and durably: readers never see half a file."""
    atomic_write_bytes(path, text.encode(encoding))


def sync_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename into it) to disk."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _age_s(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporaries of atomic writes under ``folder`` whose writer has died (killed
    midway); the temporaries of running writers stay. Returns the deleted files."""
    stale = [path for path in Path(folder).rglob(".*.tmp") if (match := _TEMPORARY.match(path.name))
             and (not _running(int(match[2])) if match[1] == _HOST else _age_s(path) > _OTHER_HOSTS_STALE_S)]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def write_jsonl(path: Path, records: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
