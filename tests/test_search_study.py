"""The persistent search: the search space's syntax, the study's budget under real Optuna and a
real journal file (claims, lost trials, K workers, settings that must not change), and, through the
real sweeper on tiny runs, a killed search resumed, two workers on one sweep folder, and pruning."""

import json
import math
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import time

import pytest
import yaml
from hydra import compose, initialize_config_dir
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from dml_bench.comparison.search_record import RESULTS_FILE
from dml_bench.comparison.search_space import override_value, parse_space
from dml_bench.comparison.sweep_study import HEARTBEAT, LOST, OWNER, RECOVERED, SweepStudy
from dml_bench.engine.search_trial import PRUNED_AT, RunPruned, TrialReport, build_pruner, open_storage
from dml_bench.runtime.errors import UserError
from scripts.bench_search_storage import main as bench_main
from tests.helpers.config import CONFIG_DIR, ROOT
from tests.helpers.runs import run_train
from tests.helpers.tiny_runs import ENV, kill_when, start_train, tiny_args, tiny_glyphs

# ---- the search space -------------------------------------------------------------------------------------


def test_each_sweep_becomes_the_distribution_it_writes():
    space, fixed = parse_space(
        {"a": "interval(0.0, 0.3)", "b": "tag(log, interval(0.002, 1.0))", "c": "choice(2, 4, 8)",
         "d": "range(1, 5)", "e": "range(0, 1, 0.25)", "f": "int(interval(1, 9))", "g": 0.5},
        ["experiment=quickstart", "c=choice(x, y)", "a=0.1"])
    assert space == {"b": FloatDistribution(0.002, 1.0, log=True), "c": CategoricalDistribution(["x", "y"]),
                     "d": IntDistribution(1, 4), "e": FloatDistribution(0.0, 0.75, step=0.25),
                     "f": IntDistribution(1, 9)}  # range's stop excluded, as Python's and Hydra's range
    assert fixed == {"g": "g=0.5", "experiment": "experiment=quickstart", "a": "a=0.1"}  # the command line fixes a


def test_a_sweep_the_search_cannot_draw_is_refused():
    with pytest.raises(UserError, match="shuffle"):
        parse_space({}, ["a=shuffle(1, 2)"])


def test_sampled_values_become_overrides_hydra_reads_back():
    assert [override_value(v) for v in (0.25, 8, "m_per_class", "a b", "it's")] == [
        "0.25", "8", "m_per_class", "'a b'", "'it\\'s'"]


# ---- the study's budget, real Optuna on a real journal file -----------------------------------------------

SPACE = {"x": FloatDistribution(0.0, 1.0)}


def sweeper_config():
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=["experiment=quickstart", "search=spce"],
                       return_hydra_config=True).hydra.sweeper


def settings(**change):
    sweeper = sweeper_config()
    base = {"direction": "maximize", "objective": "validation map@r", "sampler": dict(sweeper.sampler),
            "pruner": None, "pruners": {k: dict(v) for k, v in sweeper.pruners.items()},
            "search_space": {"x": "uniform"}, "fixed": ["experiment=quickstart"]}
    return {**base, **change}


def study(folder, n_trials=4, n_jobs=1, grace_period=600, **change):
    return SweepStudy(folder, "s", str(folder / "study.journal"), settings(**change), n_trials=n_trials,
                      n_jobs=n_jobs, heartbeat_interval=60, grace_period=grace_period).open()


def run_out(worker, trials, value=0.5):
    for trial in trials:
        worker.study.tell(trial, value)


def test_claims_stop_at_the_budget_and_never_reuse_a_number(tmp_path):
    worker = study(tmp_path, n_trials=5, n_jobs=2)
    numbers = []
    while True:
        trials, _ = worker.claim(SPACE)
        if not trials:
            break
        numbers.append([t.number for t in trials])
        run_out(worker, trials)
    assert numbers == [[0, 1], [2, 3], [4]]
    assert worker.counts() == {"complete": 5, "pruned": 0, "failed": 0, "running": 0, "lost": 0}


def test_the_sampler_is_the_configs_and_seeded_by_the_trial_number(tmp_path):
    config = sweeper_config().sampler
    worker = study(tmp_path)
    sampler = worker.sampler(3)
    assert (sampler._n_startup_trials, sampler._n_ei_candidates, sampler._multivariate, sampler._group,
            sampler._constant_liar) == (config.n_startup_trials, config.n_ei_candidates, config.multivariate,
                                        config.group, config.constant_liar)
    draws = [study(tmp_path / str(i)).claim(SPACE)[0][0].params["x"] for i in range(2)]
    assert draws[0] == draws[1]  # the same seed and number draw the same value in a fresh process's study
    assert study(tmp_path / "other", sampler={**settings()["sampler"], "seed": 1}).claim(SPACE)[0][0].params[
        "x"] != draws[0]


def test_a_trial_of_a_dead_worker_is_lost_and_its_slot_given_again(tmp_path):
    worker = study(tmp_path, n_trials=2)
    first, _ = worker.claim(SPACE)
    second, _ = worker.claim(SPACE)
    assert worker.claim(SPACE)[0] == []  # the budget is taken by two running trials
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    worker.storage.set_trial_system_attr(first[0]._trial_id, OWNER, {**worker.owner, "pid": int(dead.stdout)})
    third, counts = worker.claim(SPACE)
    assert [t.number for t in third] == [2] and counts["lost"] == 1
    lost = worker.storage.get_trial(first[0]._trial_id)
    assert lost.state == TrialState.FAIL and "ended" in lost.user_attrs[LOST]
    worker.study.tell(second[0], state=TrialState.FAIL)  # not by the sweeper: no failure reason, not counted
    assert worker.counts()["lost"] == 2


def test_a_trial_whose_run_finished_before_its_worker_died_is_complete(tmp_path):
    worker = study(tmp_path, n_trials=2)
    (trial,), _ = worker.claim(SPACE)
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "metrics.json").write_text(json.dumps({  # the run's end: its test written after its fit
        "status": "completed", "selected_on": "validation", "metrics": {"map@r": 0.2},
        "validation_metrics": {"map@r": 0.375}}))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    worker.storage.set_trial_system_attr(trial._trial_id, OWNER, {**worker.owner, "pid": int(dead.stdout)})
    (again,), counts = worker.claim(SPACE)
    recovered = worker.storage.get_trial(trial._trial_id)
    assert (recovered.state, recovered.value, again.number) == (TrialState.COMPLETE, 0.375, 1)  # not the test value
    assert counts["complete"] == 1 and counts["lost"] == 0 and RECOVERED in recovered.user_attrs


def test_a_trial_without_a_heartbeat_for_the_grace_period_is_lost(tmp_path):
    worker = study(tmp_path, n_trials=1, grace_period=30)
    trials, _ = worker.claim(SPACE)
    worker.storage.set_trial_system_attr(trials[0]._trial_id, OWNER, {"host": "elsewhere", "pid": 1})
    worker.storage.set_trial_system_attr(trials[0]._trial_id, HEARTBEAT, time.time() - 20)
    assert worker.claim(SPACE)[0] == []  # 20 s: still alive
    worker.storage.set_trial_system_attr(trials[0]._trial_id, HEARTBEAT, time.time() - 40)
    again, counts = worker.claim(SPACE)
    assert [t.number for t in again] == [1] and counts["lost"] == 1
    assert "heartbeat" in worker.storage.get_trial(trials[0]._trial_id).user_attrs[LOST]


def test_an_interrupted_worker_frees_its_slots_at_once(tmp_path):
    worker = study(tmp_path, n_trials=1)
    trials, _ = worker.claim(SPACE)
    with pytest.raises(KeyboardInterrupt), worker.heartbeat(trials):
        raise KeyboardInterrupt
    assert worker.counts()["lost"] == 1 and [t.number for t in worker.claim(SPACE)[0]] == [1]


def test_a_resumed_or_joining_worker_must_share_the_studys_settings(tmp_path):
    study(tmp_path)
    study(tmp_path, n_trials=8, n_jobs=4)  # a larger budget, more trials at a time: accepted
    for change in ({"sampler": {**settings()["sampler"], "constant_liar": False}},
                   {"fixed": ["experiment=quickstart", "trainer.epochs=30"]}, {"objective": "test map@r"}):
        with pytest.raises(UserError, match="was started with other settings"):
            study(tmp_path, **change)


def claim_in_step(folder, start, results):
    """Three claims of one trial, each started with the other worker's (``start``, a barrier)."""
    worker = SweepStudy(folder, "s", str(folder / "study.journal"), settings(), n_trials=5, n_jobs=1,
                        heartbeat_interval=60, grace_period=600).open()
    for _ in range(3):
        start.wait()
        results.put([t.number for t in worker.claim(SPACE)[0]])


def test_workers_claiming_at_once_share_one_budget(tmp_path):
    """Two workers claim together three times against a budget of 5: at the third claim one trial
    is left for both; exactly one of them gets it."""
    study(tmp_path, n_trials=5)
    context = multiprocessing.get_context("fork")  # the workers need nothing the parent has not imported
    start, results = context.Barrier(2), context.Queue()
    workers = [context.Process(target=claim_in_step, args=(tmp_path, start, results)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    claimed = sorted(n for _ in range(6) for n in results.get(timeout=5))
    assert claimed == [0, 1, 2, 3, 4]
    assert study(tmp_path, n_trials=5).counts()["running"] == 5


def test_a_trial_reports_each_epoch_and_stops_below_the_median(tmp_path):
    import optuna

    storage = open_storage(str(tmp_path / "study.journal"))
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize",
                                pruner=build_pruner("median", {"median": {"n_startup_trials": 1, "n_warmup_steps": 0}}))
    first = study.ask()
    for epoch, value in ((1, 0.4), (2, 0.6)):
        first.report(value, epoch)
    study.tell(first, 0.6)
    for value, pruned in ((0.5, False), (0.3, True)):  # against the median of trial 0 at epoch 1, 0.4
        trial = study.ask()
        report = TrialReport(study, trial._trial_id, "map@r")
        report.evaluation({"epoch": 0, "metrics": {"map@r": 0.0}})  # before training: not reported
        report.evaluation({"epoch": 1, "metrics": {"map@r": value}})
        assert storage.get_trial(trial._trial_id).intermediate_values == {1: value}
        if pruned:
            with pytest.raises(RunPruned, match="trial 2 pruned at epoch 1: its validation map@r 0.3000"):
                report.flush()
            assert storage.get_trial(trial._trial_id).user_attrs[PRUNED_AT] == 1
        else:
            report.flush()
            assert PRUNED_AT not in storage.get_trial(trial._trial_id).user_attrs


def test_the_storage_benchmark_reports_each_storages_overhead_per_trial(capsys):
    assert bench_main(["--trials", "3", "--trial-seconds", "10"]) == 0
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines() if line.startswith("| ")][1:]
    assert [row[0] for row in rows] == ["| in memory (the sampler alone)", "| journal file", "| SQLite"]
    for row in rows:  # the overhead's ratio to the 10 s trial
        assert float(row[4].rstrip(" |")) == pytest.approx(float(row[3]) / 1000 / 10, rel=0.05, abs=1e-4)


# ---- through the real sweeper, on tiny runs ---------------------------------------------------------------


def search_args(data, sweep, *extra):
    return ["-m", *tiny_args(data, "trainer.epochs=1", "search=spce", "sampler.m=4", f"hydra.sweep.dir={sweep}",
                             *extra)]


def trials_of(sweep, name="spce"):
    import optuna

    return optuna.load_study(study_name=name, storage=open_storage(str(sweep / "study.journal"))).trials


@pytest.mark.slow
def test_a_killed_search_resumes_with_the_same_command(tmp_path):
    data, sweep = tiny_glyphs(tmp_path / "data"), tmp_path / "sweep"
    args = search_args(data, sweep, "hydra.sweeper.n_trials=4")
    # trial 2's folder exists once trials 0 and 1 are told to the study (one worker, one trial at a time)
    kill_when(start_train(*args), lambda: (sweep / "2").is_dir())
    before = {n: (sweep / n / "metrics.json").stat().st_mtime_ns for n in ("0", "1")}
    result = run_train(*args)
    assert "2 of 4 trials finished (2 complete, 0 pruned, 0 failed), 1 running, 0 lost" in result.stdout
    assert "search: trial 2 was running when its worker (process" in result.stdout
    assert {n: (sweep / n / "metrics.json").stat().st_mtime_ns for n in ("0", "1")} == before  # not trained again
    assert not re.search(r"#[01] :", result.stdout + result.stderr)
    states = [(t.number, t.state) for t in trials_of(sweep)]
    assert states == [(0, TrialState.COMPLETE), (1, TrialState.COMPLETE), (2, TrialState.FAIL),
                      (3, TrialState.COMPLETE), (4, TrialState.COMPLETE)]
    results = yaml.safe_load((sweep / RESULTS_FILE).read_text())
    assert results["trials"] == {"complete": 4, "pruned": 0, "failed": 0, "running": 0, "lost": 1}
    assert all((sweep / n / "metrics.json").is_file() for n in ("3", "4"))


@pytest.mark.slow
def test_two_workers_on_one_sweep_folder_share_its_budget(tmp_path):
    data, sweep = tiny_glyphs(tmp_path / "data"), tmp_path / "sweep"
    args = search_args(data, sweep, "hydra.sweeper.n_trials=4")
    workers = [start_train(*args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(2)]
    outputs = [worker.communicate(timeout=600)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    launched = sorted(int(n) for out in outputs for n in re.findall(r"\t#(\d+) :", out))
    assert launched == [0, 1, 2, 3]  # no trial launched twice, by either worker
    trials = trials_of(sweep)
    assert [(t.number, t.state) for t in trials] == [(n, TrialState.COMPLETE) for n in range(4)]
    for trial in trials:  # each folder holds its own trial's run
        overrides = dict(o.split("=", 1) for o in yaml.safe_load((sweep / str(trial.number) / ".hydra" /
                                                                  "overrides.yaml").read_text()))
        assert float(overrides["optimizer.lr"]) == trial.params["optimizer.lr"]


@pytest.mark.slow
def test_pruning_stops_a_trial_worse_than_the_median(tmp_path):
    data, sweep = tiny_glyphs(tmp_path / "data"), tmp_path / "sweep"
    run_train(*search_args(data, sweep, "trainer.epochs=2", "hydra.sweeper.n_trials=2", "optimizer.lr=choice(0.4,1e-5)",
                           "hydra.sweeper.pruner=median", "hydra.sweeper.pruners.median.n_startup_trials=1",
                           "hydra.sweeper.pruners.median.n_warmup_steps=0"))
    first, second = trials_of(sweep)
    # seed 0's draws: the quickstart's lr, then one that leaves the network nearly untrained
    assert (first.params["optimizer.lr"], second.params["optimizer.lr"]) == (0.4, 1e-5)
    assert first.state == TrialState.COMPLETE and sorted(first.intermediate_values) == [1, 2]
    assert second.intermediate_values[1] < first.intermediate_values[1]  # below the median of one trial
    assert second.state == TrialState.PRUNED and list(second.intermediate_values) == [1]
    history = (sweep / "1" / "history.jsonl").read_text().splitlines()
    assert len(history) == 2 and not (sweep / "1" / "metrics.json").exists()  # epochs 0 and 1, then it stopped
    assert math.isclose(yaml.safe_load((sweep / RESULTS_FILE).read_text())["best_value"], first.value)


@pytest.mark.slow
def test_the_submitit_launcher_runs_batches_of_n_jobs_trials(tmp_path):
    data, sweep = tiny_glyphs(tmp_path / "data"), tmp_path / "sweep"
    result = run_train(*search_args(data, sweep, "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=2",
                                    "hydra/launcher=slurm_local"))
    output = result.stdout + result.stderr
    batches = [re.findall(r"\t#(\d+) :", part) for part in output.split("Submitit 'local' sweep output dir")[1:]]
    assert batches == [["0", "1"], ["2"]]  # two trials asked together, then the last
    assert [(t.number, t.state) for t in trials_of(sweep)] == [(n, TrialState.COMPLETE) for n in range(3)]
    assert all((sweep / str(n) / "metrics.json").is_file() for n in range(3))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_compare_again_on_its_folder_runs_only_what_is_missing(tmp_path):
    data, out = tiny_glyphs(tmp_path / "data"), tmp_path / "compare"
    tiny = [a for a in tiny_args(data) if not a.startswith(("experiment=", "trainer.epochs="))]
    command = ["make", "--no-print-directory", "compare", f"PY={sys.executable}", "STAMP=", f"COMPARE_DIR={out}",
               "COMPARE_LOSSES=cross_entropy spce", "COMPARE_TRIALS=1", "COMPARE_SEEDS=2", "COMPARE_EPOCHS=1",
               f"ARGS={' '.join(tiny)}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), **ENV}
    first = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    runs = sorted(out.glob("*/0/metrics.json")) + sorted(out.glob("*/retrain/*/metrics.json"))
    assert len(runs) == 2 + 2 * 2  # one trial and two seeds per loss
    interrupted = out / "spce" / "retrain" / "2" / "metrics.json"
    interrupted.unlink()  # as if make compare was killed during that run
    before = {path: path.stat().st_mtime_ns for path in runs if path != interrupted}
    second = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert second.stdout.count("1 of 1 trials finished") == 2  # both searches: nothing to run
    assert "finished, not run again: seed 1, 2" in second.stdout  # cross_entropy's retraining
    assert "finished, not run again: seed 1 " in second.stdout  # spce's, whose seed 2 runs again
    assert {path: path.stat().st_mtime_ns for path in before} == before and interrupted.is_file()
    assert "Against loss=cross_entropy" in (out / "comparison.md").read_text()
