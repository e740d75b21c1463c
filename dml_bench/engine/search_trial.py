"""A training run as a trial of a ``search=NAME`` study: where the study is stored, its pruner, and
the recorder that reports each validation evaluation to the trial (``hydra.sweeper.pruner``).

The sweeper (hydra_plugins/dml_bench_sweeper) runs trial N as the multirun job N; the job's own
Hydra config names everything else: ``hydra.sweeper`` (study name, storage, pruner) and
``hydra.sweep.dir`` (the default journal file). So a trial finds its study the same way under every
launcher (in the sweeper's process, a submitit process, a SLURM job). Optuna is imported only here
and only when a search runs.
"""

import logging
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from dml_bench.engine.recorders import Recorder
from dml_bench.runtime.errors import UserError

log = logging.getLogger(__name__)

SWEEPER = "hydra_plugins.dml_bench_sweeper.EqualBudgetSweeper"
JOURNAL_FILE = "study.journal"  # the default storage, in the sweep folder
PRUNED_AT = "pruned_at_epoch"  # the trial's user attribute set by the run that the pruner stopped
PRUNERS = ("median", "hyperband")


class RunPruned(UserError):
    """The pruner stopped this trial: its validation value at an epoch was worse than the pruner
    allows. The sweeper marks the trial pruned; it counts against the budget."""


def storage_location(storage: str | None, sweep_dir) -> str:
    """An RDB URL as given (``hydra.sweeper.storage=sqlite:///FILE``), or the journal file of the sweep folder."""
    return str(storage) if storage else str(Path(sweep_dir).absolute() / JOURNAL_FILE)


def open_storage(location: str):
    import optuna
    from optuna.storages.journal import JournalFileBackend

    if "://" in location:
        return optuna.storages.RDBStorage(location)
    Path(location).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(location))


def build_pruner(name: str | None, options: DictConfig | dict):
    """``hydra.sweeper.pruner``: None (no pruning), ``median`` or ``hyperband``, with the options of
    ``hydra.sweeper.pruners.NAME``."""
    import optuna

    if not name:
        return optuna.pruners.NopPruner()
    if name not in PRUNERS:
        raise UserError(f"hydra.sweeper.pruner={name}: choose null (no pruning), {' or '.join(PRUNERS)}")
    kwargs = OmegaConf.to_container(options[name]) if isinstance(options, DictConfig) else dict(options[name])
    classes = {"median": optuna.pruners.MedianPruner, "hyperband": optuna.pruners.HyperbandPruner}
    return classes[name](**kwargs)


class TrialReport(Recorder):
    """Reports ``monitor``'s validation value after each epoch as the trial's intermediate value
    (step = epoch; the evaluation before training is not reported) and asks the pruner; a pruned
    trial is marked in the study and the run ends with ``RunPruned`` once the other recorders have
    flushed that evaluation (this recorder is the last of the list)."""

    def __init__(self, study, trial_id: int, monitor: str):
        import optuna

        self.trial = optuna.trial.Trial(study, trial_id)
        self.study, self.trial_id, self.monitor = study, trial_id, monitor
        self.pruned_at = None

    def evaluation(self, record):
        epoch = record["epoch"]
        if epoch == 0 or self.monitor not in record["metrics"]:
            return
        value = record["metrics"][self.monitor]
        self.trial.report(value, epoch)
        if self.trial.should_prune():
            self.pruned_at = (epoch, value)
            self.study._storage.set_trial_user_attr(self.trial_id, PRUNED_AT, epoch)

    def flush(self):
        if self.pruned_at is not None:
            epoch, value = self.pruned_at
            raise RunPruned(f"trial {self.trial.number} pruned at epoch {epoch}: its validation {self.monitor} "
                            f"{value:.4f} is worse than the pruner ({type(self.study.pruner).__name__}) allows; "
                            "it counts against the budget (docs/comparisons.md#pruning)")


def trial_report(cfg: DictConfig) -> TrialReport | None:
    """The reporting recorder of a trial run by dml_bench's sweeper with a pruner; else None."""
    if not HydraConfig.initialized():
        return None
    hydra = HydraConfig.get()
    sweeper = hydra.sweeper
    if hydra.mode != RunMode.MULTIRUN or sweeper.get("_target_") != SWEEPER or not sweeper.get("pruner"):
        return None
    import optuna

    storage = open_storage(storage_location(sweeper.storage, hydra.sweep.dir))
    study = optuna.load_study(study_name=sweeper.study_name, storage=storage,
                              pruner=build_pruner(sweeper.pruner, sweeper.pruners))
    trial_id = storage.get_trial_id_from_study_id_trial_number(study._study_id, int(hydra.job.num))
    return TrialReport(study, trial_id, cfg.trainer.monitor)
