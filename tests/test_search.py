"""Equal-budget search: the search files, a real two-trial search through dml_bench's sweeper,
the refusal of protocol=paper, the retraining of the winner, and its comparison table and plot."""

import json
import re
import shlex
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from hydra import compose, initialize_config_dir
from matplotlib.image import imread
from omegaconf import OmegaConf
from scipy import stats
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from dml_bench.comparison.compare import compare
from dml_bench.comparison.runs import read_runs
from dml_bench.comparison.search import RESULTS_FILE, SEARCH_GROUPS, ProtocolGuard, retrain_commands
from dml_bench.comparison.search_record import OBJECTIVE_TAG, RECORD_FILE
from dml_bench.engine.search_trial import open_storage
from scripts.plot_comparison import bars
from scripts.plot_comparison import main as plot_main
from scripts.retrain_best import main as retrain_main
from tests.helpers.config import CONFIG_DIR, ROOT
from tests.helpers.runs import fast_overrides, run_train
from tests.helpers.tiny_runs import ENV, tiny_args, tiny_glyphs
from tests.test_results import write_run

SEARCHES = sorted(path.stem for path in (CONFIG_DIR / "search").glob("*.yaml"))


def compose_search(*overrides):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=True)


def test_make_compare_losses_each_have_a_search_file():
    losses = re.search(r"^COMPARE_LOSSES \?= (.*)$", (ROOT / "Makefile").read_text(), re.M).group(1).split()
    assert losses == ["cross_entropy", "contrastive", "multi_similarity", "triplet", "proxy_anchor", "spce"]
    assert set(losses) <= set(SEARCHES)


@pytest.mark.parametrize("name", SEARCHES)
def test_a_search_file_selects_only_the_search_groups_and_comments_each_range(name):
    """What retrain_best relies on: the file selects groups of SEARCH_GROUPS and the sweeper, and
    sets search.* and hydra.* only; every range has a comment (its source) above it."""
    text = (CONFIG_DIR / "search" / f"{name}.yaml").read_text()
    config = yaml.safe_load(text)
    assert set(config) == {"defaults", "search", "hydra"}
    assert config["search"] == {"name": name}
    assert set(config["hydra"]) == {"sweeper"} and set(config["hydra"]["sweeper"]) == {"params"}
    groups = {key.removeprefix("override /"): value for entry in config["defaults"] for key, value in entry.items()}
    assert groups.pop("hydra/sweeper") == "equal_budget"
    assert set(groups) <= set(SEARCH_GROUPS) and groups["protocol"] == "rigorous"
    block = text.split("    params:\n", 1)[1].splitlines()
    for previous, line in zip(block, block[1:]):
        if not line.lstrip().startswith("#"):
            assert previous.lstrip().startswith("#") or ":" in previous  # a comment above each group of ranges
    assert block[0].lstrip().startswith("#")


@pytest.mark.parametrize("name", SEARCHES)
def test_every_search_has_the_same_budget_seed_and_objective_and_real_keys(name):
    cfg = compose_search("experiment=quickstart", f"search={name}")
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.dml_bench_sweeper.EqualBudgetSweeper"
    assert (sweeper.direction, sweeper.n_trials, sweeper.sampler.seed, sweeper.n_jobs) == ("maximize", 20, 0, 1)
    assert sweeper.study_name == name
    assert (cfg.protocol.name, cfg.trainer.monitor) == ("rigorous", "map@r")  # validation MAP@R
    assert {"optimizer.lr", "optimizer.weight_decay"} <= set(sweeper.params)
    for key in sweeper.params:  # a misspelt key would fail every trial
        assert OmegaConf.select(cfg, key, default="missing") != "missing", key
    assert cfg.hydra.runtime.choices.loss == name


def test_search_composes_with_an_experiment_and_yields_to_the_command_line():
    cfg = compose_search("experiment=paper_cub", "search=triplet", "sampler.m=8")
    assert (cfg.dataset.name, cfg.loss._target_.rsplit(".", 1)[1], cfg.protocol.name) == (
        "cub200", "TripletMarginLoss", "rigorous")  # the search's loss and protocol over the experiment's
    assert cfg.sampler.m == 8


def test_search_with_protocol_paper_is_refused_before_any_trial(tmp_path):
    folder = tmp_path / "sweep"  # a guard that let it through would run one short trial
    result = run_train("-m", "experiment=quickstart", "search=contrastive", "protocol=paper", *fast_overrides(),
                       "hydra.sweeper.n_trials=1", f"hydra.sweep.dir={folder}", check=False)
    assert result.returncode == 1
    assert "search=contrastive cannot run with protocol=paper" in result.stderr
    assert "test set" in result.stderr and "Traceback" not in result.stderr
    assert not folder.exists()


def test_a_single_run_of_a_search_with_protocol_paper_is_refused_too(capsys):
    cfg = compose_search("experiment=quickstart", "search=triplet", "protocol=paper")
    with pytest.raises(SystemExit) as exit_info:
        ProtocolGuard().on_run_start(cfg)
    assert exit_info.value.code == 1
    assert "search=triplet cannot run with protocol=paper" in capsys.readouterr().err
    ProtocolGuard().on_run_start(compose_search("experiment=quickstart", "search=triplet"))  # rigorous: accepted


@pytest.fixture(scope="module")
def search_dir(tmp_path_factory):
    """A real two-trial search=contrastive through dml_bench's sweeper on tiny data."""
    root = tmp_path_factory.mktemp("search")
    data = tiny_glyphs(root / "data")
    sweep = root / "sweep"
    run_train("-m", *tiny_args(data, "trainer.epochs=1", "search=contrastive", "hydra.sweeper.n_trials=2",
                               f"hydra.sweep.dir={sweep}"), env=ENV)
    return sweep


def trial_results(sweep):
    trials = {}
    for folder in sorted(p for p in sweep.iterdir() if (p / "metrics.json").is_file()):
        overrides = yaml.safe_load((folder / ".hydra" / "overrides.yaml").read_text())
        summary = json.loads((folder / "metrics.json").read_text())
        trials[folder.name] = (dict(o.split("=", 1) for o in overrides), summary)
    return trials


def test_two_trial_search_writes_every_trial_and_its_best_parameters(search_dir):
    trials = trial_results(search_dir)
    assert sorted(trials) == ["0", "1"]
    results = yaml.safe_load((search_dir / RESULTS_FILE).read_text())
    space = {"optimizer.lr", "optimizer.weight_decay", "loss.pos_margin", "loss.neg_margin", "sampler.m"}
    assert set(results["best_params"]) == space
    for overrides, summary in trials.values():
        assert summary["selected_on"] == "validation"
        assert 0.002 <= float(overrides["optimizer.lr"]) <= 1.0 and overrides["sampler.m"] in {"2", "4", "8"}
        assert 0.0 <= float(overrides["loss.pos_margin"]) <= 0.3 < float(overrides["loss.neg_margin"]) <= 1.0
        assert overrides["search"] == "contrastive"


def test_the_objective_is_validation_map_at_r_never_a_test_metric(search_dir):
    results = yaml.safe_load((search_dir / RESULTS_FILE).read_text())
    trials = trial_results(search_dir).values()
    validation = [summary["validation_metrics"]["map@r"] for _, summary in trials]
    test = [summary["metrics"]["map@r"] for _, summary in trials]
    assert results["best_value"] == pytest.approx(max(validation))
    assert all(results["best_value"] != pytest.approx(t) for t in test)
    best = max(trials, key=lambda trial: trial[1]["validation_metrics"]["map@r"])
    assert {k: best[0][k] for k in results["best_params"]} == {k: str(v) for k, v in results["best_params"].items()}


def test_the_sweep_folder_records_how_the_search_ran(search_dir):
    record = yaml.safe_load((search_dir / RECORD_FILE).read_text())
    sweeper = compose_search("experiment=quickstart", "search=contrastive").hydra.sweeper
    assert record["optuna"] == optuna.__version__ and int(optuna.__version__.split(".")[0]) >= 4
    assert record["sampler"] == OmegaConf.to_container(sweeper.sampler) and record["sampler"]["seed"] == 0
    assert (record["n_trials"], record["direction"], record["objective"]) == (2, "maximize", "validation map@r")
    assert record["storage"] == str(search_dir / "study.journal") and record["pruner"] is None
    study = optuna.load_study(study_name="contrastive", storage=open_storage(record["storage"]))
    assert study.user_attrs["dml_bench"]["sampler"] == record["sampler"]  # what the study ran with


def test_each_trial_is_a_row_of_tensorboards_hparams_tab(search_dir):
    for number, (overrides, summary) in trial_results(search_dir).items():
        (log_dir,) = (search_dir / number / "tb").iterdir()  # the trial's run, beside its scalars
        events = EventAccumulator(str(log_dir))
        events.Reload()
        start = HParamsPluginData.FromString(events.PluginTagToContent("hparams")["_hparams_/session_start_info"])
        values = start.session_start_info.hparams
        assert values["optimizer.lr"].number_value == pytest.approx(float(overrides["optimizer.lr"]))
        assert values["sampler.m"].number_value == int(overrides["sampler.m"])
        assert (values["trial"].number_value, values["state"].string_value) == (int(number), "COMPLETE")
        objective = events.Scalars(OBJECTIVE_TAG)[0].value
        assert objective == pytest.approx(summary["validation_metrics"]["map@r"], abs=1e-6)


@pytest.mark.slow
def test_a_failed_trial_counts_against_the_budget_and_the_search_goes_on(tmp_path):
    sweep = tmp_path / "sweep"  # lr 1e12 makes the loss diverge: its trial returns None
    result = run_train("-m", *tiny_args(tiny_glyphs(tmp_path / "data"), "trainer.epochs=1", "search=cross_entropy",
                                        "hydra.sweeper.n_trials=2", "optimizer.lr=choice(1e12, 0.1)",
                                        "hydra.sweeper.sampler.seed=4",  # draws 1e12 for trial 0, 0.1 for trial 1
                                        f"hydra.sweep.dir={sweep}"), env=ENV)
    assert "search: trial 0 failed, the run returned None" in result.stdout
    assert "it counts against the budget" in result.stdout
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    assert sum((sweep / job / "metrics.json").is_file() for job in ("0", "1")) == 1
    results = yaml.safe_load((sweep / RESULTS_FILE).read_text())
    assert results["best_params"]["optimizer.lr"] == 0.1 and results["best_trial"] == 1
    assert results["trials"] == {"complete": 1, "pruned": 0, "failed": 1, "running": 0, "lost": 0}


def constructed_sweep(root: Path) -> Path:
    """A search folder as hydra-optuna-sweeper left it (no best_trial), with two trials; trial 1 is the best."""
    sweep = root / "sweep"
    cli = ["experiment=quickstart", "loss=contrastive", "trainer.epochs=3", "search=contrastive", "seed=2"]
    for job, lr in enumerate((0.5, 0.05)):
        task = [f"optimizer.lr={lr}", "sampler.m=4", *cli]
        hydra = {"hydra": {"overrides": {"hydra": ["hydra/launcher=slurm", "hydra.sweeper.n_trials=2",
                                                   f"hydra.sweep.dir={sweep}", "hydra.mode=MULTIRUN"],
                                         "task": task},
                           "runtime": {"choices": {"search": "contrastive", "loss": "contrastive", "miner": "none",
                                                   "sampler": "m_per_class", "protocol": "rigorous"}}}}
        (sweep / str(job) / ".hydra").mkdir(parents=True)
        (sweep / str(job) / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra))
        (sweep / str(job) / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(task))
        (sweep / str(job) / ".hydra" / "config.yaml").write_text("seed: 2\n")
    (sweep / RESULTS_FILE).write_text(yaml.safe_dump(
        {"name": "optuna", "best_params": {"optimizer.lr": 0.05, "sampler.m": 4}, "best_value": 0.3}))
    return sweep


def test_retrain_command_reruns_the_best_trial_with_new_seeds(tmp_path):
    sweep = constructed_sweep(tmp_path)
    commands, trial, finished = retrain_commands(sweep, 3, tmp_path / "out", ["trainer.epochs=30"])
    assert trial == sweep / "1" and finished == []
    assert commands == [[sys.executable, "-m", "dml_bench.train", "-m", "experiment=quickstart",
                       "loss=contrastive", "miner=none", "sampler=m_per_class", "protocol=rigorous",
                       "optimizer.lr=0.05", "sampler.m=4", "seed=0,1,3", "hydra/launcher=slurm",
                       f"hydra.sweep.dir={tmp_path / 'out'}", "hydra.sweep.subdir=${seed}", "trainer.epochs=30"]]


def test_retraining_again_runs_only_the_seeds_whose_run_has_not_finished(tmp_path):
    sweep, out = constructed_sweep(tmp_path), tmp_path / "out"
    for seed, summary in ((0, {"status": "completed", "selected_on": "validation", "validation_metrics": {}}),
                          (1, {"status": "completed", "selected_on": "validation"})):  # 1: killed in its test
        (out / str(seed)).mkdir(parents=True)
        (out / str(seed) / "metrics.json").write_text(json.dumps(summary))
    (commands, _, finished), seed_one = retrain_commands(sweep, 3, out), out / "1"
    # seed 3 has not started: a multirun of it; seed 1 holds its unfinished run: continued, never overwritten
    assert finished == [0] and len(commands) == 2
    assert commands[0][3] == "-m" and "seed=3" in commands[0]
    assert commands[1][3] != "-m" and "seed=1" in commands[1] and commands[1][-1] == f"resume={seed_one}"
    (out / "1" / "metrics.json").write_text(json.dumps({"status": "completed", "selected_on": "test"}))
    (out / "3").mkdir()
    (out / "3" / "metrics.json").write_text(json.dumps({"status": "completed", "selected_on": "test"}))
    assert retrain_commands(sweep, 3, out)[0] == []


def test_retrain_best_dry_run_prints_the_command_and_refuses_other_folders(tmp_path, capsys):
    sweep = constructed_sweep(tmp_path)
    assert retrain_main([str(sweep), "--seeds", "2", "--dry-run"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"best trial: {sweep / '1'}"
    assert shlex.split(printed[1])[-4:] == ["seed=0,1", "hydra/launcher=slurm", f"hydra.sweep.dir={sweep / 'retrain'}",
                                            "hydra.sweep.subdir=${seed}"]
    assert retrain_main([str(tmp_path), "--dry-run"]) == 1
    assert f"{tmp_path / RESULTS_FILE} is missing" in capsys.readouterr().err


@pytest.mark.slow
def test_retrain_best_trains_the_winner(search_dir):
    """One real retraining run (seed 1, the search's seed being 0) of the search's winner."""
    assert retrain_main([str(search_dir), "--seeds", "1"]) == 0
    best = yaml.safe_load((search_dir / RESULTS_FILE).read_text())["best_params"]
    run = search_dir / "retrain" / "1"  # the folder of seed 1
    overrides = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
    assert "seed=1" in overrides and "loss=contrastive" in overrides and "search=contrastive" not in overrides
    config = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
    assert config["loss"]["neg_margin"] == pytest.approx(best["loss.neg_margin"]) and config["sampler"]["m"] == best[
        "sampler.m"]
    assert json.loads((run / "metrics.json").read_text())["selected_on"] == "validation"
    before = (run / "metrics.json").stat().st_mtime_ns
    assert retrain_main([str(search_dir), "--seeds", "1"]) == 0  # again: nothing left to run
    assert (run / "metrics.json").stat().st_mtime_ns == before


def winners(root):
    """Retrained winners: their tuned lr differs by loss; map@r is recall@1 / 2."""
    recall = {"cross_entropy": [0.50, 0.52, 0.51], "contrastive": [0.60, 0.61, 0.63]}
    for loss, lr in (("cross_entropy", 0.4), ("contrastive", 0.05)):
        for seed, value in zip((1, 2, 3), recall[loss]):
            write_run(root / loss / str(seed), [f"loss={loss}", f"optimizer.lr={lr}", f"seed={seed}"],
                      {"recall@1": value, "map@r": value / 2, "num_queries": 100})
    return recall


def test_by_loss_compares_winners_whose_tuned_values_differ(tmp_path):
    recall = winners(tmp_path)
    assert compare(read_runs([tmp_path]), "loss=cross_entropy")["rows"] == []  # lr differs: no baseline match
    rows = {row["metric"]: row for row in compare(read_runs([tmp_path], by=["loss"]), "loss=cross_entropy")["rows"]}
    differences = np.subtract(recall["contrastive"], recall["cross_entropy"])
    assert rows["recall@1"]["difference"] == pytest.approx(differences.mean())
    expected = stats.ttest_rel(recall["contrastive"], recall["cross_entropy"])
    assert rows["recall@1"]["p"] == pytest.approx(expected.pvalue)


def test_plot_comparison_draws_each_mean_with_its_t_interval(tmp_path, capsys):
    recall = winners(tmp_path)
    labels, values = bars([tmp_path], ["loss"], ["map@r", "recall@1"])
    assert labels == ["contrastive", "cross_entropy"]  # in the order of their folders
    for label, (mean, half_width) in zip(labels, values["recall@1"]):
        low, high = stats.t.interval(0.95, 2, loc=np.mean(recall[label]), scale=stats.sem(recall[label]))
        assert (mean, half_width) == pytest.approx((np.mean(recall[label]), (high - low) / 2))
    out = tmp_path / "plot.png"
    assert plot_main([str(tmp_path), "--by", "loss", "--out", str(out)]) == 0
    height, width, _ = imread(out).shape
    assert width > height and f"plot: {out}" in capsys.readouterr().out
    assert plot_main([str(tmp_path), "--metrics", "nmi"]) == 1
