"""The persistent study of a ``search=NAME`` sweep and its budget, shared by every worker.

A worker (one ``python -m dml_bench.train -m ... search=NAME`` process) claims trials under a lock
file in the sweep folder, so that K workers started on one sweep folder run ``n_trials`` trials
in total, each number once. A trial counts against the budget once it is complete, pruned, or
failed by its own run's error; a trial whose worker died is *lost*: marked failed, not counted,
and its slot goes to a new trial (number N + 1, ...; trial numbers are never reused, so
``SWEEP_DIR/N/`` is written by one trial only). A trial whose worker died after its run had
finished is complete, with the objective its ``metrics.json`` holds.

A worker proves its running trials alive by a heartbeat (``hydra.sweeper.heartbeat_interval``):
a trial whose heartbeat is older than ``hydra.sweeper.grace_period``, or whose worker is a process
of this machine that no longer exists, is lost. Each trial is drawn by a TPE sampler seeded with
(``sampler.seed``, the trial's number): its draw depends on the seed, its number and the trials
before it, not on the worker that drew it (a fresh process seeded by the seed alone would repeat
trial 0's draw after each restart).
"""

import json
import math
import os
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from dml_bench.comparison.search import finished_run
from dml_bench.engine.search_trial import PRUNED_AT, build_pruner, open_storage
from dml_bench.runtime.errors import UserError

SETTINGS = "dml_bench"  # the study's user attribute: the settings it was started with
FAILURE = "failure"  # a trial's user attribute: why its run failed (it counts against the budget)
LOST = "lost"  # a trial's user attribute: why it was failed without counting
RECOVERED = "recovered"  # a trial's user attribute: its worker died after its run had finished
OWNER, HEARTBEAT = "dml_bench:owner", "dml_bench:heartbeat"  # a running trial's system attributes
LOCK = "budget"  # SWEEP_DIR/budget.lock, held while a worker claims trials
# Settings a resumed or joining worker must share with the study: its command line's overrides, the
# search space, the sampler... (the budget may grow, n_jobs and the launcher may differ).
SHARED = ("direction", "objective", "sampler", "pruner", "search_space", "fixed")


class SweepStudy:
    def __init__(self, sweep_dir: Path, study_name: str, storage: str, settings: dict, *, n_trials: int,
                 n_jobs: int, heartbeat_interval: float, grace_period: float):
        self.sweep_dir, self.name, self.location = Path(sweep_dir), study_name, storage
        # direction, objective, sampler (TPE options), pruner, pruners, search_space: as the storage returns them
        self.settings = json.loads(json.dumps(settings))
        self.n_trials, self.n_jobs = n_trials, n_jobs
        self.heartbeat_interval, self.grace_period = heartbeat_interval, grace_period
        self.owner = {"host": socket.gethostname(), "pid": os.getpid()}

    # ---- opening ----------------------------------------------------------------------------
    def open(self):
        import optuna

        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        self.storage = open_storage(self.location)
        with self.locked():
            self.study = optuna.create_study(study_name=self.name, storage=self.storage, load_if_exists=True,
                                             direction=self.settings["direction"])
            started = self.study.user_attrs.get(SETTINGS)
            if started is None:
                self.study.set_user_attr(SETTINGS, self.settings)
            else:
                self._check_same(started)
        self.study.pruner = build_pruner(self.settings["pruner"], self.settings["pruners"])
        return self

    def _check_same(self, started: dict) -> None:
        differ = [key for key in SHARED if started.get(key) != self.settings.get(key)]
        if differ:
            details = "; ".join(f"{key}: the study has {started.get(key)}, this command {self.settings.get(key)}"
                                for key in differ)
            raise UserError(f"study {self.name} in {self.location} was started with other settings ({details}). "
                            "A resumed search, or a worker joining one, runs with the settings the study started "
                            "with; give those, or another hydra.sweep.dir for a new search")

    @contextmanager
    def locked(self):
        from optuna.storages.journal import JournalFileOpenLock

        lock = JournalFileOpenLock(str(self.sweep_dir / LOCK), grace_period=30)
        lock.acquire()
        try:
            yield
        finally:
            lock.release()

    # ---- the budget -------------------------------------------------------------------------
    def counts(self) -> dict:
        """Trials by what they are to the budget: complete, pruned, failed (counted), running, lost."""
        from optuna.trial import TrialState

        counts = dict.fromkeys(("complete", "pruned", "failed", "running", "lost"), 0)
        for trial in self.study.get_trials(deepcopy=False):
            if trial.state == TrialState.FAIL:
                counts["failed" if FAILURE in trial.user_attrs else "lost"] += 1
            elif trial.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING):
                counts[trial.state.name.lower()] += 1
        return counts

    def finished(self, counts: dict) -> int:
        return counts["complete"] + counts["pruned"] + counts["failed"]

    def claim(self, distributions: dict) -> tuple[list, dict]:
        """Up to ``n_jobs`` new trials within the budget (none when it is spent or taken by running
        trials), asked under the lock; and the counts they were claimed against."""
        with self.locked():
            self.fail_lost()
            counts = self.counts()
            free = self.n_trials - self.finished(counts) - counts["running"]
            trials = []
            for _ in range(max(0, min(self.n_jobs, free))):
                self.study.sampler = self.sampler(len(self.study.get_trials(deepcopy=False)))
                trial = self.study.ask(distributions)
                self.storage.set_trial_system_attr(trial._trial_id, OWNER, self.owner)
                self.storage.set_trial_system_attr(trial._trial_id, HEARTBEAT, time.time())
                trials.append(trial)
        return trials, counts

    def sampler(self, number: int):
        import optuna

        options = dict(self.settings["sampler"])
        options.pop("name")
        seed = int(np.random.SeedSequence([options.pop("seed"), number]).generate_state(1)[0])
        return optuna.samplers.TPESampler(seed=seed, **options)

    def fail_lost(self) -> None:
        """Mark failed, without counting them, the running trials whose worker is gone."""
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        now = time.time()
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            why = self._lost(trial, now)
            if why is None:
                continue
            try:
                value = self._finished_objective(trial.number)
                if value is not None:  # the run had ended, its worker died before telling the study
                    self.storage.set_trial_user_attr(trial._trial_id, RECOVERED, why)
                    self.study.tell(trial.number, value)
                    say(f"trial {trial.number} was running when {why}, but its run had finished: complete, its "
                        f"objective {value:.4f} read from {self.sweep_dir / str(trial.number)}/metrics.json")
                    continue
                self.storage.set_trial_user_attr(trial._trial_id, LOST, why)
                self.storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
                say(f"trial {trial.number} was running when {why}: marked failed, not counted against the budget")
            except UpdateFinishedTrialError:
                pass  # finished meanwhile

    def _finished_objective(self, number: int) -> float | None:
        """The objective trial ``number``'s finished run returned: its metrics.json's validation value
        of the monitored metric (``objective``: "validation map@r"); None for a run that did not finish."""
        folder = self.sweep_dir / str(number)
        if not finished_run(folder):
            return None
        split, monitor = self.settings["objective"].split(" ", 1)
        summary = json.loads((folder / "metrics.json").read_text())
        value = summary.get(f"{split}_metrics", {}).get(monitor)
        return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None

    def _lost(self, trial, now: float) -> str | None:
        owner = trial.system_attrs.get(OWNER) or {}
        if owner.get("host") == self.owner["host"] and owner.get("pid") != self.owner["pid"] \
                and not _alive(owner.get("pid")):
            return f"its worker (process {owner.get('pid')} on {owner.get('host')}) ended"
        beat = trial.system_attrs.get(HEARTBEAT, trial.datetime_start.timestamp())
        if now - beat > self.grace_period:
            return f"its worker's last heartbeat was {now - beat:.0f} s ago (hydra.sweeper.grace_period)"
        return None

    @contextmanager
    def heartbeat(self, trials: list):
        """Beats for ``trials`` while they run; on the way out (a Ctrl-C, a SIGTERM) those still
        running are lost, their slots free at once."""
        stop = threading.Event()

        def beat():
            while not stop.wait(self.heartbeat_interval):
                for trial in trials:
                    try:
                        self.storage.set_trial_system_attr(trial._trial_id, HEARTBEAT, time.time())
                    except Exception:  # finished, or the storage briefly unreachable: the next beat retries
                        pass

        thread = threading.Thread(target=beat, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            self._abandon(trials)

    def _abandon(self, trials: list) -> None:
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        for trial in trials:
            if self.storage.get_trial(trial._trial_id).state == TrialState.RUNNING:
                try:
                    self.storage.set_trial_user_attr(trial._trial_id, LOST, "its worker was interrupted")
                    self.storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
                except UpdateFinishedTrialError:
                    pass

    # ---- results ----------------------------------------------------------------------------
    def finish(self, trial, returned) -> str:
        """Tell the study how trial ended, from its job's ``JobReturn``: pruned (its run marked it),
        complete (a finite objective), or failed (counted). Returns the state's name."""
        from hydra.core.utils import JobStatus
        from optuna.trial import TrialState

        frozen = self.storage.get_trial(trial._trial_id)
        if frozen.state != TrialState.RUNNING:
            say(f"trial {trial.number} was marked {frozen.state.name} while it ran ({frozen.user_attrs.get(LOST)}); "
                "its result is not counted")
            return frozen.state.name
        value = returned._return_value if returned.status is JobStatus.COMPLETED else None
        if PRUNED_AT in frozen.user_attrs:
            self.study.tell(trial, state=TrialState.PRUNED)
            return "PRUNED"
        if isinstance(value, (int, float)) and math.isfinite(value):
            self.study.tell(trial, float(value))
            return "COMPLETE"
        why = (f"the run raised {type(returned._return_value).__name__}: {returned._return_value}"
               if returned.status is not JobStatus.COMPLETED else f"the run returned {value!r} (its error is in "
               f"{self.sweep_dir / str(trial.number)}/train.log)")
        trial.set_user_attr(FAILURE, why)
        self.study.tell(trial, state=TrialState.FAIL)
        say(f"trial {trial.number} failed, {why}; it counts against the budget")
        return "FAIL"


def say(message: str) -> None:
    """A line on the sweeper's console (Hydra reconfigures logging around each launch)."""
    print(f"search: {message}", flush=True)


def _alive(pid) -> bool:
    if not isinstance(pid, int):
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
