"""What a ``search=NAME`` sweep leaves in its folder besides the trials' run folders:

- ``search.yaml``: how the search runs (Optuna's version, the study and its storage, the budget,
  the objective, the sampler's and pruner's settings, the search space), written at each start;
- ``optimization_results.yaml``: the best trial, its parameters and objective, and the trials by
  state, written once the budget is spent (``retrain_best.py`` reads it);
- each trial's searched values and objective in TensorBoard's HParams tab (one row per trial),
  beside its run's scalars in ``SWEEP_DIR/N/tb/``.
"""

import math
import os
from pathlib import Path

import yaml

from dml_bench.engine.recorders import RunContext, tensorboard_dir
from dml_bench.runtime.run_folder import multirun_job_name

RECORD_FILE = "search.yaml"
RESULTS_FILE = "optimization_results.yaml"
OBJECTIVE_TAG = "search/objective"


def write_text(path: Path, text: str) -> None:
    """Whole or not at all: several workers may write the same file while others read it."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(text)
    os.replace(temporary, path)


def write_yaml(path: Path, data: dict) -> None:
    write_text(path, yaml.safe_dump(data, sort_keys=False))


def write_record(sweep_dir: Path, record: dict) -> None:
    import optuna

    write_yaml(Path(sweep_dir) / RECORD_FILE, {"optuna": optuna.__version__, **record})


def write_results(study, sweep_dir: Path, counts: dict) -> dict | None:
    """``optimization_results.yaml`` of a study whose budget is spent: None (nothing written)
    without a complete trial."""
    from optuna.trial import TrialState

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    best = study.best_trial
    results = {"study": study.study_name, "best_trial": best.number, "best_params": dict(best.params),
               "best_value": float(best.value), "trials": counts}
    write_yaml(Path(sweep_dir) / RESULTS_FILE, results)
    return results


def write_hparams(run_dir: Path, trial, distributions: dict) -> None:
    """The finished ``trial`` (a FrozenTrial) as one session of TensorBoard's HParams tab: its
    searched values, its number and state, and its objective (a pruned trial's last reported
    value; none for a failed one) as the scalar ``search/objective``."""
    from optuna.distributions import CategoricalDistribution
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    value = trial.value if trial.value is not None else (
        trial.intermediate_values[max(trial.intermediate_values)] if trial.intermediate_values else None)
    values = {**trial.params, "trial": trial.number, "state": trial.state.name}
    discrete = {key: list(d.choices) for key, d in distributions.items() if isinstance(d, CategoricalDistribution)}
    discrete["state"] = ["COMPLETE", "PRUNED", "FAIL"]
    experiment, start, end = hparams(values, {OBJECTIVE_TAG: 0.0}, hparam_domain_discrete=discrete)
    log_dir = tensorboard_dir(RunContext(Path(run_dir), multirun_job_name(Path(run_dir))))
    with SummaryWriter(log_dir) as writer:
        for summary in (experiment, start, end):
            writer.file_writer.add_summary(summary)
        if value is not None and math.isfinite(value):
            writer.add_scalar(OBJECTIVE_TAG, value, 0)
