"""Small helpers of the entry points: seeding, running with user-facing errors."""

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
from dml_bench.submitit_jobs import in_dml_bench_submitit_job

log = logging.getLogger("dml_bench")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # CPU and every CUDA device


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
    whole sweep, and an exception would stop hydra-submitit-launcher from collecting the others.
    Under dml_bench's submitit launchers, where each job is a process of its own and the launching
    process waits for every job, the error is raised after it is logged: the job fails with the run.
    """
    try:
        return function(*args)
    except Exception as error:
        user_error = user_error_of(error)
        full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
        message = str(user_error) if user_error else f"{type(error).__name__}: {error}"
        if in_multirun():
            log.error("%s", message, exc_info=full_error or user_error is None)
            if in_dml_bench_submitit_job():
                raise
            return None
        log.error("%s", message)
        if full_error or user_error is None:
            raise
        print(f"\nError: {user_error}", file=sys.stderr)
        sys.exit(1)
