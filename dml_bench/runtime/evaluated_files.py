"""The files of ``python -m dml_bench.evaluate``: the checkpoint that ``checkpoint=`` names, and the
names of what it writes beside it, each starting with the checkpoint's (``best_``, ``last_``) so
that evaluating best.pt and last.pt of a run keeps both."""

import logging
from pathlib import Path

from dml_bench.runtime.errors import UserError

log = logging.getLogger(__name__)

GIVE = "give a run folder (e.g. outputs/2026-01-31/12-00-00) or one of its checkpoints/best.pt or last.pt"


def checkpoint_file(given: str) -> Path:
    """The checkpoint ``given`` names: a file, or a run folder's checkpoints/best.pt."""
    path = Path(given)
    if path.is_file():
        return path
    if not path.exists():
        raise UserError(f"checkpoint={given} does not exist; {GIVE}.")
    best = path / "checkpoints" / "best.pt"
    if not best.is_file():
        raise UserError(f"checkpoint={given} is a folder but no run folder with a checkpoint: {best} does not exist; "
                        f"{GIVE}.")
    log.info("checkpoint=%s is a run folder: evaluating its %s", given, best)
    return best


def output_name(checkpoint: Path, name: str) -> str:
    """``best_sample.png`` for the ``sample.png`` of best.pt."""
    return f"{checkpoint.stem}_{name}"
