"""Ctrl-C (SIGINT) and SIGTERM stop a training run with one line instead of a traceback: where
it was and the command that continues it. The process still ends by the signal, as it would
without a handler, so that a shell sees it (``$?`` is 130 or 143, and a loop of runs stops) and so
does a scheduler.

Python turns SIGINT into KeyboardInterrupt; ``ended_by_signals`` has SIGTERM raise
``Interrupted`` (a KeyboardInterrupt) the same way, wherever the process is, where SIGTERM's
handler is the default one: a submitit job's own handlers (which requeue the job) stay. The
trainer closes its recorders and says what it was doing (``Interrupted.during``); ``reported``
logs the line on rank 0 alone (torchrun hands the signal to every rank).
"""

import logging
import os
import signal
import sys
from contextlib import contextmanager

from hydra.core.hydra_config import HydraConfig

from dml_bench.runtime.run_folder import launcher_rank, resume_command

log = logging.getLogger("dml_bench")


class Interrupted(KeyboardInterrupt):
    """The signal ``signum`` stopped the run while it was doing ``during`` (e.g. "epoch 3")."""

    def __init__(self, signum: int, during: str | None = None):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.during = signum, during


def signal_of(stop: KeyboardInterrupt) -> int:
    """The signal behind ``stop``: SIGINT for Ctrl-C's plain KeyboardInterrupt."""
    return getattr(stop, "signum", signal.SIGINT)


def _raise_interrupted(signum, frame):
    # SIGTERM sent to the whole process group (by a scheduler) ends the DataLoader workers too, and
    # torch's SIGCHLD handler would raise an error for each of them: now, their end is expected.
    signal.signal(signal.SIGCHLD, _expected)
    raise Interrupted(signum)


def _expected(signum, frame):
    pass  # (not SIG_DFL: Python would report a SIGCHLD already pending as "ignored due to race condition")


def ended_by_signals(main) -> None:
    """Run ``main()``; a KeyboardInterrupt (SIGINT, or SIGTERM) ends the process by its signal,
    once the logs are flushed, without a traceback."""
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        main()
        return
    except KeyboardInterrupt as stop:
        signum = signal_of(stop)
    signal.signal(signum, signal.SIG_DFL)  # a second one ends the process at once
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signum)


@contextmanager
def reported():
    """A KeyboardInterrupt inside a training run's Hydra job is logged, a WARNING (on the console
    and in train.log) that names the command that continues the run, and raised on."""
    try:
        yield
    except KeyboardInterrupt as stop:
        if launcher_rank() == 0:
            during = f" during {stop.during}" if getattr(stop, "during", None) else ""
            launcher = "torchrun ..." if int(os.environ.get("WORLD_SIZE", 1)) > 1 else "python"
            hydra = HydraConfig.get()
            log.warning("interrupted (%s)%s; continue it with: %s", signal.Signals(signal_of(stop)).name, during,
                        resume_command(hydra.overrides.task, hydra.runtime.output_dir, launcher))
        raise
