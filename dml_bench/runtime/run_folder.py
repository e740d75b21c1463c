"""How Hydra names a run's folder: OmegaConf resolvers that configs/train.yaml uses.

``dml_bench.run_dir``: the folder given by ``resume=RUN_DIR``, else the usual timestamped one.
``dml_bench.now``: Hydra's ``now``, except that every rank of a torchrun launch formats rank 0's
start time (``engine.distributed.share_start_time`` shares it), so that all ranks agree.
``dml_bench.hydra_subdir``: where Hydra saves the composed config: ``.hydra`` for a new run;
``.hydra-resume`` when resuming, so that the run's own ``.hydra`` stays as it was; nothing on
ranks other than 0.

``resume_command``: the command that continues a run in its folder.

``multirun_job_name``: what a multirun job sets of the keys its sweep varies, the name its
loggers give it.
"""

import datetime
import os
import shlex
from pathlib import Path

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
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


def multirun_job_name(run_dir: Path) -> str | None:
    """A multirun job's name: its overrides of the keys its sweep varies, sorted and joined the
    way Hydra's ``override_dirname`` joins them (``loss=contrastive,seed=1``); None for a single run.

    The job's overrides come from its own .hydra/hydra.yaml, so that the job resumed later keeps
    its name; the keys the sweep varies from the sweep's multirun.yaml beside the job folder (its
    overrides that sweep, ``loss=a,b`` or ``seed=range(3)``, and a sweeper plugin's
    ``hydra.sweeper.params``). Without that file: every override of the job (``override_dirname``).
    """
    hydra_file = Path(run_dir) / ".hydra" / "hydra.yaml"
    if not hydra_file.is_file():
        return None
    hydra = yaml.safe_load(hydra_file.read_text())["hydra"]
    if hydra["mode"] != "MULTIRUN":
        return None
    swept = swept_keys(Path(run_dir).parent / "multirun.yaml")
    if not swept:
        return hydra["job"]["override_dirname"] or None
    overrides = OverridesParser.create().parse_overrides(hydra["overrides"]["task"])
    return ",".join(sorted(o.input_line for o in overrides if o.key_or_group in swept)) or None


def swept_keys(sweep_file: Path) -> set[str]:
    if not sweep_file.is_file():
        return set()
    hydra = yaml.safe_load(sweep_file.read_text())["hydra"]
    overrides = OverridesParser.create().parse_overrides(hydra["overrides"]["task"])
    return {o.key_or_group for o in overrides if o.is_sweep_override()} | set(hydra["sweeper"].get("params") or {})


def register() -> None:
    # Cached like Hydra's own ``now``: a multirun's jobs get the sweep's cached values.
    OmegaConf.register_new_resolver("dml_bench.now", start_time, use_cache=True, replace=True)
    OmegaConf.register_new_resolver("dml_bench.run_dir", run_dir, replace=True)
    OmegaConf.register_new_resolver("dml_bench.hydra_subdir", hydra_subdir, replace=True)


def resume_command(overrides: list[str], run_dir, launcher: str = "python") -> str:
    """The command that continues the run in ``run_dir``: the ``overrides`` of the command that
    started it, and ``resume=`` that folder; ``launcher`` runs the module (``torchrun ...``)."""
    kept = [override for override in overrides if not override.startswith("resume=")]
    return f"{launcher} -m dml_bench.train {shlex.join([*kept, f'resume={run_dir}'])}"
