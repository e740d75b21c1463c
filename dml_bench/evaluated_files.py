"""The files that ``python -m dml_bench.evaluate`` writes beside a checkpoint, each named after it
(``best_``, ``last_``), so that evaluating best.pt and last.pt of a run keeps both."""

from pathlib import Path


def output_name(checkpoint: Path, name: str) -> str:
    """``best_sample.png`` for the ``sample.png`` of best.pt."""
    return f"{checkpoint.stem}_{name}"
