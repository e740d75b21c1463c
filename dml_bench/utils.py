"""Small helpers of the entry points: seeding, device choice, running with user-facing errors."""

import logging
import os
import random
import sys

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode

from dml_bench.errors import UserError

log = logging.getLogger("dml_bench")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # CPU and every CUDA device


def set_deterministic(deterministic, device: torch.device) -> bool:
    """``auto``: on for CPU, off for CUDA. CPU runs repeat exactly either way: torch's CPU kernels
    give the same results for the same number of threads. On CUDA, deterministic mode makes torch
    pick deterministic kernels (with a warning naming any op that has none) and sets the cuBLAS
    workspace they need; off, cuDNN benchmarks and picks its fastest, non-deterministic kernels."""
    if deterministic == "auto":
        deterministic = device.type != "cuda"
    if device.type == "cuda":
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before cuBLAS starts
            torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = bool(deterministic)
        torch.backends.cudnn.benchmark = not deterministic
    return bool(deterministic)


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


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def user_error_of(error: Exception) -> UserError | None:
    """``error`` if it is a UserError, or the UserError behind an InstantiationException (raised
    inside a constructor that hydra.utils.instantiate called)."""
    if isinstance(error, InstantiationException):
        while error is not None and not isinstance(error, UserError):
            error = error.__cause__
    return error if isinstance(error, UserError) else None


def report_user_errors(function, *args):
    """Run ``function``; a UserError ends the process with its paragraph and no traceback
    (HYDRA_FULL_ERROR=1 re-raises it to show the traceback). Any error is logged first, so that
    the run's log holds its ERROR line (``dml_bench.results`` reports it).

    In a multirun, a failing job is logged (with its traceback, unless it is a UserError) and
    returns None, so the launcher goes on with the other jobs: raising SystemExit would end the
    whole sweep, and an exception would stop the submitit launcher from collecting the others.
    """
    try:
        return function(*args)
    except Exception as error:
        user_error = user_error_of(error)
        full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
        message = str(user_error) if user_error else f"{type(error).__name__}: {error}"
        if in_multirun():
            log.error("%s", message, exc_info=full_error or user_error is None)
            return None
        log.error("%s", message)
        if full_error or user_error is None:
            raise
        print(f"\nError: {user_error}", file=sys.stderr)
        sys.exit(1)
