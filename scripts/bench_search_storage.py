#!/usr/bin/env python
"""What the persistent study costs a search: the sweeper's bookkeeping per trial, as a share of a trial's time.

    python scripts/bench_search_storage.py [--trials 50] [--sweep-dir SWEEP_DIR | --trial-seconds S]
        [--search contrastive] [--folder DIR]

Runs the bookkeeping of ``--trials`` trials, without training, through ``SweepStudy`` (the
sweeper's own code: the lock, the lost-trial check, the budget count, a TPE draw, the trial's
owner and heartbeat, the result told) on each storage: the journal file (the default) and SQLite
(``hydra.sweeper.storage=sqlite:///...``), and the same draws and results on Optuna's in-memory
storage, which is the sampler's own cost. Prints, per storage, the mean milliseconds per trial
(all trials, and the last 10, where the study is largest) and the storage's overhead (that minus
in-memory) as a ratio of a trial's wall time: the mean ``wall_time_s`` of the runs of
``--sweep-dir`` (a search's folder), or ``--trial-seconds``.
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import yaml
from hydra.core.utils import JobReturn, JobStatus

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dml_bench.comparison.search_space import describe, parse_space  # noqa: E402
from dml_bench.comparison.sweep_study import SweepStudy  # noqa: E402


def search_space(search: str) -> dict:
    sweeper = yaml.safe_load((ROOT / "configs/hydra/sweeper/equal_budget.yaml").read_text())
    params = yaml.safe_load((ROOT / f"configs/search/{search}.yaml").read_text())["hydra"]["sweeper"]["params"]
    return sweeper, parse_space({**sweeper["params"], **params}, [])[0]


def objective(params: dict) -> float:
    """A made-up objective of the drawn values: the sampler sees a landscape, not noise."""
    return sum(float(v) if isinstance(v, (int, float)) else 0.0 for v in params.values()) % 1.0


def through_sweeper(folder: Path, storage: str, sweeper: dict, space: dict, trials: int) -> list[float]:
    settings = {"direction": "maximize", "objective": "benchmark", "sampler": sweeper["sampler"], "pruner": None,
                "pruners": sweeper["pruners"], "search_space": describe(space), "fixed": []}
    study = SweepStudy(folder, "bench", storage, settings, n_trials=trials, n_jobs=1, heartbeat_interval=60,
                       grace_period=600).open()
    times = []
    for _ in range(trials):
        start = time.perf_counter()
        (trial,), _ = study.claim(space)
        returned = JobReturn()
        returned.status, returned._return_value = JobStatus.COMPLETED, objective(trial.params)
        study.finish(trial, returned)
        times.append(time.perf_counter() - start)
    return times


def in_memory(sweeper: dict, space: dict, trials: int) -> list[float]:
    import optuna

    reference = SweepStudy(Path("."), "bench", "", {"sampler": sweeper["sampler"]}, n_trials=trials, n_jobs=1,
                           heartbeat_interval=60, grace_period=600)
    study = optuna.create_study(direction="maximize")
    times = []
    for number in range(trials):
        start = time.perf_counter()
        study.sampler = reference.sampler(number)
        trial = study.ask(space)
        study.tell(trial, objective(trial.params))
        times.append(time.perf_counter() - start)
    return times


def trial_seconds(sweep_dir: Path) -> float:
    walls = [json.loads(path.read_text())["wall_time_s"] for path in sweep_dir.glob("*/metrics.json")]
    if not walls:
        raise SystemExit(f"no run of {sweep_dir} has a metrics.json: give a search's folder, or --trial-seconds")
    return statistics.fmean(walls)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=50, help="trials of bookkeeping (default 50)")
    parser.add_argument("--search", default="contrastive",
                        help="whose search space (configs/search/; default contrastive)")
    parser.add_argument("--sweep-dir", type=Path,
                        help="a search's folder: its runs' mean wall_time_s is a trial's time")
    parser.add_argument("--trial-seconds", type=float, help="a trial's wall time in seconds, instead of --sweep-dir")
    parser.add_argument("--folder", type=Path, help="where the storages are written (default: a temporary folder)")
    args = parser.parse_args(argv)
    if (args.sweep_dir is None) == (args.trial_seconds is None):
        parser.error("give one of --sweep-dir and --trial-seconds")
    trial = args.trial_seconds or trial_seconds(args.sweep_dir)
    warnings.filterwarnings("ignore")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sweeper, space = search_space(args.search)
    with tempfile.TemporaryDirectory(dir=args.folder) as tmp:
        runs = {"in memory (the sampler alone)": in_memory(sweeper, space, args.trials),
                "journal file": through_sweeper(Path(tmp) / "journal", str(Path(tmp) / "journal" / "study.journal"),
                                                sweeper, space, args.trials),
                "SQLite": through_sweeper(Path(tmp) / "sqlite", f"sqlite:///{tmp}/sqlite/study.db", sweeper, space,
                                          args.trials)}
    base = statistics.fmean(runs["in memory (the sampler alone)"])
    print(f"{args.trials} trials of search={args.search}'s space, Optuna {optuna.__version__}; a trial's wall time "
          f"{trial:.2f} s\n")
    print("| storage | ms per trial | ms per trial, last 10 | overhead vs in memory, ms | overhead / trial time |")
    print("|---|---|---|---|---|")
    for name, times in runs.items():
        mean, last = statistics.fmean(times), statistics.fmean(times[-10:])
        overhead = mean - base
        print(f"| {name} | {1000 * mean:.1f} | {1000 * last:.1f} | {1000 * overhead:.1f} | "
              f"{overhead / trial:.2e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
