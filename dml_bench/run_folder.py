"""How Hydra names a run's folder: OmegaConf resolvers that configs/train.yaml uses.

``dml_bench.run_dir``: the folder given by ``resume=RUN_DIR``, else the usual timestamped one.
``dml_bench.now``: Hydra's ``now``, except that every rank of a torchrun launch formats rank 0's
start time (``engine.distributed.share_start_time`` shares it), so that all ranks agree.
``dml_bench.hydra_subdir``: where Hydra saves the composed config: ``.hydra`` for a new run;
``.hydra-resume`` when resuming, so that the run's own ``.hydra`` stays as it was; nothing on
ranks other than 0.
"""

import datetime
import os

from omegaconf import OmegaConf

START_TIME_ENV = "DML_BENCH_START_TIME"


def launcher_rank() -> int:
    """The rank the launcher gave this process (torchrun, SLURM, submitit-local); 0 otherwise."""
    for name in ("RANK", "SLURM_PROCID", "SUBMITIT_LOCAL_GLOBALID"):
        if name in os.environ:
            return int(os.environ[name])
    return 0


def start_time(pattern: str) -> str:
    stamp = os.environ.get(START_TIME_ENV)
    return (datetime.datetime.fromisoformat(stamp) if stamp else datetime.datetime.now()).strftime(pattern)


def run_dir(resume: str | None, new_run_dir: str) -> str:
    return str(resume) if resume else new_run_dir


def hydra_subdir(resume: str | None) -> str | None:
    if launcher_rank() != 0:
        return None
    return ".hydra-resume" if resume else ".hydra"


def register() -> None:
    # Cached like Hydra's own ``now``: a multirun's jobs get the sweep's cached values.
    OmegaConf.register_new_resolver("dml_bench.now", start_time, use_cache=True, replace=True)
    OmegaConf.register_new_resolver("dml_bench.run_dir", run_dir, replace=True)
    OmegaConf.register_new_resolver("dml_bench.hydra_subdir", hydra_subdir, replace=True)
