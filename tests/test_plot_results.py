"""A tiny real sweep over two loss pairings (as `make sweep` runs them) and its plot."""

import json

import pytest
from matplotlib.image import imread

from dml_bench.evaluation.mi_terms import MI_PROXY
from scripts.plot_results import load_runs
from scripts.plot_results import main as plot_main
from tests.helpers.runs import fast_overrides, run_train


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    sweep = tmp_path_factory.mktemp("sweep")
    run_train("-m", "experiment=quickstart_ms,quickstart_proxy_anchor", *fast_overrides(), f"hydra.sweep.dir={sweep}")
    return sweep


def test_sweep_pins_loss_miner_and_sampler(sweep_dir):
    configs = {job: (sweep_dir / job / ".hydra" / "config.yaml").read_text() for job in ("0", "1")}
    assert "MultiSimilarityMiner" in configs["0"] and "MPerClassSampler" in configs["0"]
    assert "ProxyAnchorLoss" in configs["1"] and "UniformSampler" in configs["1"]
    assert "(MPerClassSampler)" in (sweep_dir / "0" / "train.log").read_text()
    for job in ("0", "1"):
        assert json.loads((sweep_dir / job / "metrics.json").read_text())["status"] == "completed"


def test_runs_are_labelled_by_loss_and_miner_with_their_mi_curves(sweep_dir):
    runs = {run["label"]: run for run in load_runs(sweep_dir)}
    assert set(runs) == {"multi_similarity + multi_similarity miner", "proxy_anchor"}
    for run in runs.values():
        assert run["ks"] == [1, 2, 4, 8] and all(0 <= r <= 1 for r in run["recalls"])
        assert run["recalls"] == sorted(run["recalls"])  # Recall@K never falls as K grows
        assert run["epochs"] == [1] and len(run["mi"][MI_PROXY]) == 1  # the trained epochs


def test_plot_results_writes_a_png(sweep_dir, tmp_path, capsys):
    out = tmp_path / "plot.png"
    assert plot_main([str(sweep_dir), "--out", str(out)]) == 0
    height, width, _ = imread(out).shape
    assert width > 2 * height  # four panels side by side
    assert str(out) in capsys.readouterr().out


def test_plot_results_without_runs_fails_cleanly(tmp_path, capsys):
    assert plot_main([str(tmp_path)]) == 1
    assert "no completed runs" in capsys.readouterr().err
