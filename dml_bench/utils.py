"""Small helpers of the entry points: seeding, device choice, running with user-facing errors."""

import logging
import os
import random
import sys

import numpy as np
import torch
from hydra.errors import InstantiationException

from dml_bench.errors import UserError

log = logging.getLogger("dml_bench")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"trainer.device={device} but CUDA is not available here; use trainer.device=cpu or auto.")
    return torch.device(device)


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """auto: bf16 on CUDA, none on CPU."""
    choices = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if amp not in choices:
        raise UserError(f"trainer.amp={amp} is not one of auto, {', '.join(choices)}.")
    return choices[amp] if device.type == "cuda" else None


def report_user_errors(function, *args):
    """Run ``function``; a UserError ends the process with its paragraph and no traceback
    (HYDRA_FULL_ERROR=1 re-raises it to show the traceback)."""
    try:
        return function(*args)
    except (UserError, InstantiationException) as error:
        user_error = error
        while user_error is not None and not isinstance(user_error, UserError):
            user_error = user_error.__cause__  # raised inside a constructor hydra.utils.instantiate called
        if user_error is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        log.error("%s", user_error)
        print(f"\nError: {user_error}", file=sys.stderr)
        sys.exit(1)
