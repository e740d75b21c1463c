"""Checkpoints that survive a crash or a full disk (written to a temporary file, then renamed
over), and whose damage is an error that says what to do (resume from best.pt, or restart).

A checkpoint holds tensors and plain data only (dicts, lists, numbers, strings): the random
generators' states are stored as lists, so every checkpoint loads with ``torch.load(...,
weights_only=True)``, which never runs code from the file. A checkpoint of an earlier dml_bench
that needs unpickling is refused, never loaded unsafely as a fallback (whoever crafted the file
controls that failure); ``python -m dml_bench.convert_checkpoint`` rewrites it once the user says
they trust it.
"""

import io
import pickle
import random
import shutil
import zipfile
from pathlib import Path

import numpy as np
import torch

from dml_bench.runtime.errors import UserError
from dml_bench.runtime.files import atomic_write_bytes


def rng_states(device: torch.device) -> dict:
    """Python's, numpy's and torch's generators, and that of the CUDA ``device`` the process uses
    (one per process: each DDP rank restores it on its own GPU)."""
    version, python_state, gauss = random.getstate()
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    states = {"python": [version, list(python_state), gauss],
              "numpy": [kind, keys.tolist(), position, has_gauss, cached_gaussian],
              "torch": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def restore_rng_states(states: dict, device: torch.device) -> None:
    version, python_state, gauss = states["python"]
    random.setstate((version, tuple(python_state), gauss))
    kind, keys, position, has_gauss, cached_gaussian = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached_gaussian))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and device.type == "cuda":
        torch.cuda.set_rng_state(states["cuda"], device)


# What a checkpoint may hold besides containers, tensors and numpy values (converted).
PLAIN = (str, int, float, bool, type(None), torch.Tensor, torch.dtype, torch.Size, torch.device)


def plain_data(value, where: str = "checkpoint", strict: bool = False):
    """``value`` with numpy arrays as lists and numpy scalars as numbers, so that
    ``torch.load(weights_only=True)`` reads it. Other objects are kept, or with ``strict`` a
    UserError naming ``where`` (they would need unpickling)."""
    if isinstance(value, dict):
        return {key: plain_data(item, f"{where}[{key!r}]", strict) for key, item in value.items()}
    if isinstance(value, list | tuple):
        items = [plain_data(item, f"{where}[{index}]", strict) for index, item in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)  # a named tuple too: weights_only reads tuples
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if strict and not isinstance(value, PLAIN):
        raise UserError(f"{where} is a {type(value).__module__}.{type(value).__qualname__}, which no dml_bench "
                        "checkpoint holds: this file was not written by dml_bench, and is not converted.")
    return value


def save_checkpoint(path: Path, state: dict) -> None:
    """Write ``state`` to ``path`` (a run's ``checkpoints/NAME.pt``) so that a crash or a failed write
    never leaves ``path`` half written: to a temporary file, flushed to disk, then renamed over.
    A failed write (disk full...) removes the temporary file and leaves ``path`` as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(plain_data(state), buffer)  # serialising first: what fails below is the file system alone
    try:
        atomic_write_bytes(path, buffer.getbuffer())
    except OSError as error:
        raise write_error(path, error, buffer.getbuffer().nbytes) from error


def write_error(path: Path, error: OSError, size: int) -> UserError:
    previous = (f"The previous {path.name} is unchanged and can be resumed from"
                if path.is_file() else f"No {path.name} was written before")
    return UserError(
        f"Could not write the checkpoint {path} ({error.strerror or error}): it needs {_size(size)} and its "
        f"file system has {_size(shutil.disk_usage(path.parent).free)} free. {previous}. Free some space, "
        f"then continue the run with resume={path.parent.parent}."
    )


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"


# What torch.load raises on a truncated or corrupt file (its zip reader raises RuntimeError).
READ_ERRORS = (EOFError, OSError, RuntimeError, pickle.UnpicklingError, ValueError, zipfile.BadZipFile)


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    """The checkpoint at ``path``; a file that cannot be read is a UserError that says what to do."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's words for a file that asks to import code; any other failure is damage. Which
        # message is shown is all this decides: nothing is loaded either way.
        if "Unsupported global" not in str(error):
            raise read_error(Path(path), error) from error
        raise UserError(
            f"Refusing to load the checkpoint {path}: it holds Python objects that only unpickling can read, "
            "and unpickling runs whatever code the file carries. A checkpoint of an earlier dml_bench is such a "
            "file. If you trust where it comes from, convert it once to the safe format with `python -m "
            f"dml_bench.convert_checkpoint {path} --i-trust-this-file`, then use it again."
        ) from None
    except READ_ERRORS as error:
        raise read_error(Path(path), error) from error


def read_error(path: Path, error: Exception) -> UserError:
    """The error of a checkpoint that cannot be read at all (truncated, corrupt, unreadable)."""
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    return UserError(f"Cannot read the checkpoint {path} ({reason}): the file is truncated, corrupt or "
                     f"unreadable. {_instead(path)}")


def _instead(path: Path) -> str:
    """What to do instead of reading the broken ``path``."""
    best = path.with_name("best.pt")
    if path.name != "last.pt":
        return "Use another checkpoint of the run (checkpoints/last.pt), or copy the file again if it was copied."
    restart = f"delete {path} to start the run again from scratch in its folder"
    if not best.is_file():
        return f"There is no {best} to continue from instead: {restart}."
    try:
        epoch = torch.load(best, map_location="cpu", weights_only=True)["epoch"]
    except (*READ_ERRORS, KeyError, TypeError):
        return f"{best} cannot be read either: {restart}."
    return (f"To continue the run from its best epoch instead, copy {best} (epoch {epoch}) over it and resume "
            f"again; or {restart}.")
