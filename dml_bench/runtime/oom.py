"""CUDA out-of-memory as a user error that names the batch-size override to lower."""

import contextlib

import torch

from dml_bench.runtime.errors import UserError


@contextlib.contextmanager
def suggest_smaller_batch(during: str, override: str, batch_size: int | None):
    """Turn ``torch.cuda.OutOfMemoryError`` raised inside the block into a UserError that suggests
    ``override=<half of batch_size>`` (or just names ``override`` when the size is unknown)."""
    try:
        yield
    except torch.cuda.OutOfMemoryError as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else "out of memory"
        now, example = "", ""
        if batch_size:
            now, example = f" with {override}={batch_size}", f", e.g. {override}={max(1, batch_size // 2)}"
        raise UserError(
            f"CUDA ran out of memory during {during}{now} ({reason}). Lower {override}{example}, or "
            "use a smaller model or input size (trainer.amp=bf16 also saves memory)."
        ) from error
