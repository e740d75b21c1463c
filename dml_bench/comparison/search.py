"""Equal-budget search (``search=NAME``, configs/search/, docs/comparisons.md): the refusal of
``protocol=paper``, and the retraining of a sweep's winner with several seeds.

A search file selects only the groups in ``SEARCH_GROUPS`` (besides the sweeper) and sets only
``search.*`` and ``hydra.*`` (tests/test_search.py checks it), so the winner's runs are the
sweep's command line without ``search=``, plus those groups' choices and the best parameters.
"""

import json
import sys
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from dml_bench.builders import selection_split
from dml_bench.comparison.search_record import RESULTS_FILE
from dml_bench.runtime.errors import UserError
from dml_bench.runtime.run_claim import other_run_files
from dml_bench.runtime.trusted_targets import override_targets, refuse_untrusted

SEARCH_GROUPS = ("loss", "miner", "sampler", "protocol")
HYDRA_FILE = ".hydra/hydra.yaml"  # in each trial's folder: its overrides and config group choices
# Hydra overrides of the search that the retraining leaves out: its sweeper, folder and mode.
SWEEP_ONLY = ("hydra.sweeper", "hydra/sweeper", "hydra.sweep.", "hydra.mode")


def check_protocol(cfg: DictConfig) -> None:
    search = cfg.get("search")
    if search and selection_split(cfg) == "test":  # protocol=paper: the only one that selects on test
        raise UserError(
            f"search={search.name} cannot run with protocol=paper: that protocol has no validation split and "
            "selects the epoch on the test set, so every trial's objective would be a test metric and the search "
            "would tune the hyperparameters on the test set. Leave protocol= out (search= selects "
            "protocol=rigorous) or give protocol=rigorous or protocol=cross_validation."
        )


class ProtocolGuard(Callback):
    """Refuses ``search=`` under ``protocol=paper`` before the first trial (configs/train.yaml
    registers it). Hydra turns a callback's exception into a warning, hence the exit."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        self._check(config)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self._check(config)

    @staticmethod
    def _check(config: DictConfig) -> None:
        try:
            check_protocol(config)
        except UserError as error:
            print(f"\nError: {error}", file=sys.stderr)
            sys.exit(1)


def best_parameters(sweep_dir: Path) -> dict:
    """The sweep's ``optimization_results.yaml``: ``best_params``, ``best_value`` and, from
    dml_bench's sweeper, ``best_trial`` (its number)."""
    path = sweep_dir / RESULTS_FILE
    if not path.is_file():
        raise UserError(f"{path} is missing: the search writes it once its budget is spent "
                        "(python -m dml_bench.train -m ... search=NAME); is the search finished, and is "
                        f"{sweep_dir} its hydra.sweep.dir?")
    results = OmegaConf.to_container(OmegaConf.load(path))
    if "best_params" not in results:
        raise UserError(f"{path} has no best_params (a search with several objectives?): retraining "
                        "needs the single best trial of a search= sweep")
    return results


def best_trial(sweep_dir: Path, results: dict) -> Path:
    """The best trial's folder: ``SWEEP_DIR/best_trial``, or, in a results file without
    ``best_trial`` (hydra-optuna-sweeper's), the trial folder whose overrides hold the best
    parameters (written as ``name=value``, as ``retrain_overrides`` does)."""
    best = results["best_params"]
    if "best_trial" in results:
        folder = sweep_dir / str(results["best_trial"])
        if not (folder / HYDRA_FILE).is_file():
            raise UserError(f"{folder}, the best trial of {sweep_dir / RESULTS_FILE}, has no {HYDRA_FILE}: is "
                            f"{sweep_dir} the hydra.sweep.dir of that search?")
        return folder
    wanted = {f"{name}={value}" for name, value in best.items()}
    for trial in sorted(sweep_dir.glob(f"*/{HYDRA_FILE}")):
        if wanted <= set(OmegaConf.load(trial.parent / "overrides.yaml")):
            return trial.parent.parent
    raise UserError(f"no trial folder of {sweep_dir} has the best parameters of its {RESULTS_FILE} "
                    f"({', '.join(sorted(wanted))}): is {sweep_dir} the hydra.sweep.dir of that search?")


def retrain_seeds(trial_dir: Path, seeds: int) -> list[int]:
    """The first ``seeds`` non-negative integers other than the search's own seed, with which the
    best trial was chosen for its validation score (an optimistic draw)."""
    search_seed = OmegaConf.load(trial_dir / ".hydra" / "config.yaml").seed
    return [s for s in range(seeds + 1) if s != search_seed][:seeds]


def finished_run(run_dir: Path) -> bool:
    """Whether the run in ``run_dir`` got to its end: its metrics.json holds the test of the
    checkpoint it selected (or, selected on test, its summary)."""
    path = run_dir / "metrics.json"
    if not path.is_file():
        return False
    summary = json.loads(path.read_text())
    return summary.get("status") == "completed" and (
        summary.get("selected_on") == "test" or "validation_metrics" in summary)


def retrain_overrides(trial_dir: Path, best: dict, seeds: list[int], out: Path, trusted=()) -> list[str]:
    """The overrides of the multirun that retrains the best trial (``trial_dir``) with ``seeds``,
    each in ``out/SEED/``. A ``_target_`` in the trial's overrides must be one that configs/ or
    ``trusted`` (``--trust-target``) names: the folder may come from anyone
    (dml_bench.runtime.trusted_targets)."""
    hydra = OmegaConf.load(trial_dir / HYDRA_FILE).hydra
    refuse_untrusted(override_targets([*hydra.overrides.task, *hydra.overrides.hydra]),
                     trial_dir / HYDRA_FILE, trusted, lambda names: f"add --trust-target {names}")
    choices = hydra.runtime.choices
    if not choices.get("search"):
        raise UserError(f"{trial_dir} is not a trial of a search= sweep (it selects no search); retraining "
                        "takes the best parameters of one")
    parser = OverridesParser.create()
    dropped = {"search", "seed", *SEARCH_GROUPS, *best}
    task = [o.input_line for o in parser.parse_overrides(list(hydra.overrides.task)) if o.key_or_group not in dropped]
    hydra_overrides = [o.input_line for o in parser.parse_overrides(list(hydra.overrides.hydra))
                       if not o.key_or_group.startswith(SWEEP_ONLY)]
    return [*task, *(f"{group}={choices[group]}" for group in SEARCH_GROUPS),
            *(f"{name}={value}" for name, value in best.items()),
            f"seed={','.join(map(str, seeds))}", *hydra_overrides, f"hydra.sweep.dir={out}",
            "hydra.sweep.subdir=${seed}"]


def retrain_commands(sweep_dir: Path, seeds: int, out: Path, extra: list[str] = (),
                     trusted=()) -> tuple[list[list[str]], Path, list[int]]:
    """The commands that retrain the sweep's winner (``extra`` overrides added or in place of the
    same key's) with the seeds whose run in ``out/SEED/`` has not finished: one
    ``python -m dml_bench.train -m OVERRIDES...`` of the seeds not started yet, and one
    ``resume=out/SEED`` of each seed whose run started there but did not finish (a new run never
    writes over another's files); then the winner's trial folder, and the finished seeds.
    ``trusted``: the targets the user accepts in the trial's overrides besides those of configs/."""
    results = best_parameters(sweep_dir)
    best, trial = results["best_params"], best_trial(sweep_dir, results)
    wanted = retrain_seeds(trial, seeds)
    finished = [seed for seed in wanted if finished_run(out / str(seed))]
    started = [seed for seed in wanted if seed not in finished and other_run_files(out / str(seed))]
    fresh = [seed for seed in wanted if seed not in finished and seed not in started]
    parser = OverridesParser.create()
    replaced = {o.key_or_group for o in parser.parse_overrides(list(extra))}

    def command(seed_list: list[int], resume: Path | None = None) -> list[str]:
        given = retrain_overrides(trial, best, seed_list, out, trusted)
        overrides = [o.input_line for o in parser.parse_overrides(given) if o.key_or_group not in replaced]
        if resume is None:
            return [sys.executable, "-m", "dml_bench.train", "-m", *overrides, *extra]
        return [sys.executable, "-m", "dml_bench.train", *overrides, *extra, f"resume={resume}"]

    commands = ([command(fresh)] if fresh else []) + [command([seed], out / str(seed)) for seed in started]
    return commands, trial, finished
