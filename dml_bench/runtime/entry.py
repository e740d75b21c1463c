"""Small helpers of the entry points: seeding, running with user-facing errors."""

import logging
import os
import random
import sys

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from dml_bench.runtime.errors import user_error_of
from dml_bench.runtime.submitit_jobs import in_dml_bench_submitit_job

log = logging.getLogger("dml_bench")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # CPU and every CUDA device


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def log_to_files(message: str) -> None:
    """An ERROR line in the run's log files (train.log) alone, not on the console."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "%s", (message,), None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and record.levelno >= handler.level:
            handler.handle(record)


def report_user_errors(function, *args):
    """Run ``function``; a UserError ends the process with its paragraph, printed once on stderr,
    and no traceback (HYDRA_FULL_ERROR=1 re-raises it to show the traceback). Any error is logged
    to the run's log first, so that it holds its ERROR line (``dml_bench.comparison.runs`` reports it).

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
        log_to_files(message)  # the console gets the paragraph (or Hydra's traceback) once, below
        if full_error or user_error is None:
            raise
        print(f"\nError: {user_error}", file=sys.stderr)
        sys.exit(1)
