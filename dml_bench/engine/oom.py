"""CUDA out-of-memory as a user error that names the batch-size override to lower."""

import contextlib

import torch

from dml_bench.errors import UserError


@contextlib.contextmanager
def suggest_smaller_batch(during: str, override: str, batch_size: int):
    """Turn ``torch.cuda.OutOfMemoryError`` raised inside the block into a UserError that suggests
    ``override=<half of batch_size>``."""
    try:
        yield
    except torch.cuda.OutOfMemoryError as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else "out of memory"
        raise UserError(
            f"CUDA ran out of memory during {during} with {override}={batch_size} ({reason}). "
            f"Lower it, e.g. {override}={max(1, batch_size // 2)}, or use a smaller model or input "
            "size (trainer.amp=bf16 also saves memory)."
        ) from error
