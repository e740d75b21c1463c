"""dml_bench's sweeper, ``hydra/sweeper=equal_budget`` (configs/hydra/sweeper/equal_budget.yaml):
the equal-budget search of ``search=NAME`` over Optuna's ask-and-tell interface, its study
persistent (a journal file in the sweep folder, or ``hydra.sweeper.storage=URL``) and shared by
every worker started on the same sweep folder. docs/comparisons.md.

Each trial is the multirun job whose number is the trial's: the launcher (basic, submitit, SLURM)
runs a batch of ``n_jobs`` trials, numbered consecutively, as jobs ``N, N+1...`` in
``SWEEP_DIR/N/``. The study's bookkeeping is ``dml_bench.comparison.sweep_study``; Hydra imports
this package at every start, so Optuna and dml_bench are imported only when a sweep runs.
"""

import logging
import time

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


class EqualBudgetSweeper(Sweeper):
    def __init__(self, direction: str, n_trials: int, n_jobs: int, study_name: str, storage: str | None,
                 sampler: DictConfig, pruner: str | None, pruners: DictConfig, heartbeat_interval: float,
                 grace_period: float, params: DictConfig | None = None):
        self.options = {"direction": direction, "n_trials": n_trials, "n_jobs": n_jobs, "study_name": study_name,
                        "storage": storage, "sampler": OmegaConf.to_container(sampler), "pruner": pruner,
                        "pruners": OmegaConf.to_container(pruners), "heartbeat_interval": heartbeat_interval,
                        "grace_period": grace_period}
        self.params = OmegaConf.to_container(params) if params else {}

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(config=config, hydra_context=hydra_context,
                                                                task_function=task_function)

    def sweep(self, arguments: list[str]) -> None:
        from dml_bench.builders import selection_split
        from dml_bench.comparison import search_record
        from dml_bench.comparison.search_space import describe, override_value, parse_space
        from dml_bench.comparison.sweep_study import SweepStudy
        from dml_bench.engine.search_trial import storage_location
        from dml_bench.runtime.errors import UserError

        o, sweep = self.options, self.config.hydra.sweep
        if OmegaConf.to_container(sweep, resolve=False).get("subdir") != "${hydra.job.num}":
            raise UserError("hydra.sweep.subdir must stay ${hydra.job.num} in a search: trial N runs in SWEEP_DIR/N")
        if o["n_trials"] < 1 or o["n_jobs"] < 1:
            raise UserError("hydra.sweeper.n_trials and hydra.sweeper.n_jobs must be positive")
        distributions, fixed = parse_space(self.params, arguments)
        settings = {"direction": o["direction"],
                    "objective": f"{selection_split(self.config)} {self.config.trainer.monitor}",
                    "sampler": o["sampler"], "pruner": o["pruner"], "pruners": o["pruners"],
                    "search_space": describe(distributions), "fixed": list(fixed.values())}
        location = storage_location(o["storage"], sweep.dir)
        study = SweepStudy(sweep.dir, o["study_name"], location, settings, n_trials=o["n_trials"],
                           n_jobs=o["n_jobs"], heartbeat_interval=o["heartbeat_interval"],
                           grace_period=o["grace_period"]).open()
        # as Hydra's basic sweeper does: the trials' TensorBoard runs are named by the searched keys it lists
        search_record.write_text(study.sweep_dir / "multirun.yaml", OmegaConf.to_yaml(self.config))
        search_record.write_record(study.sweep_dir, {
            "study": o["study_name"], "storage": location, "n_trials": o["n_trials"], "n_jobs": o["n_jobs"],
            **settings, "sampler_seeds": "trial N draws with TPESampler(seed=SeedSequence([sampler.seed, N]))",
            "heartbeat_interval": o["heartbeat_interval"], "grace_period": o["grace_period"]})
        counts = study.counts()
        print(f"search: study {o['study_name']} in {location}; {study.finished(counts)} of {o['n_trials']} trials "
              f"finished ({counts['complete']} complete, {counts['pruned']} pruned, {counts['failed']} failed), "
              f"{counts['running']} running, {counts['lost']} lost", flush=True)
        while True:
            trials, counts = study.claim(distributions)
            if not trials:
                if study.finished(counts) >= o["n_trials"]:
                    break
                time.sleep(min(5.0, o["heartbeat_interval"]))  # the last trials run in other workers
                continue
            first = trials[0].number
            assert [t.number for t in trials] == list(range(first, first + len(trials))), "claimed under the lock"
            for trial in trials:
                if (study.sweep_dir / str(trial.number) / "metrics.json").exists():
                    raise UserError(f"{study.sweep_dir / str(trial.number)} holds a finished run that is not trial "
                                    f"{trial.number} of study {o['study_name']} in {location}: one sweep folder holds "
                                    "one study")
            jobs = [[*fixed.values(), *(f"{k}={override_value(v)}" for k, v in t.params.items())] for t in trials]
            with study.heartbeat(trials):
                returns = self.launcher.launch(jobs, initial_job_idx=first)
                for trial, returned in zip(trials, returns):
                    study.finish(trial, returned)
                    search_record.write_hparams(study.sweep_dir / str(trial.number),
                                                study.storage.get_trial(trial._trial_id), distributions)
        results = search_record.write_results(study.study, study.sweep_dir, study.counts())
        if results is None:
            log.error("search: no trial of study %s completed; %s not written", o["study_name"],
                      search_record.RESULTS_FILE)
        else:
            print(f"search: {o['n_trials']} trials finished; best trial {results['best_trial']}, objective "
                  f"{results['best_value']:.4f}: {study.sweep_dir / search_record.RESULTS_FILE}", flush=True)
