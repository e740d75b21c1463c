"""The four paper experiments train end to end on CPU: miniature copies of each benchmark's official
files, prepared by the real preparer, then a few iterations of the recipe with random weights and
32 px images (everything else as the paper sets it)."""

import json

import pytest
import yaml

from dml_bench.comparison.aggregate import PAPER_RECALL
from dml_bench.train import train
from tests.helpers.miniature_datasets import prepare_miniature
from tests.helpers.runs import MINIATURE_RUN_OVERRIDES, hydra_job, run_train, selected_epoch

# Enough images for batches of 4: classes on both sides of each benchmark's train/test boundary.
MINIATURE_CLASSES = {
    "cub200": (1, 2, 3, 101, 102, 103),
    "cars196": (1, 2, 3, 99, 100, 101),
    "sop": (1, 2, 3, 11319, 11320, 11321),
    "inshop": tuple(range(1, 9)),  # odd items train; even items split between query and gallery
}
EXPERIMENTS = {"paper_cub": "cub200", "paper_cars": "cars196", "paper_sop": "sop", "paper_inshop": "inshop"}
# Random weights (no download in tests), 32 px images, batches of 4, one epoch, CPU.
SMALL_RUN = ["model.pretrained=false", *MINIATURE_RUN_OVERRIDES]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """``<tmp>/<name>`` prepared from miniature official files, for each benchmark."""
    root = tmp_path_factory.mktemp("data")
    for name, classes in MINIATURE_CLASSES.items():
        prepare_miniature(name, root, classes=classes, images_per_class=4)
    return root


@pytest.mark.slow  # 20 s; test_paper_experiments checks each experiment's composed recipe
def test_each_paper_experiment_trains_a_few_iterations(data_dir, tmp_path):
    sweep = tmp_path / "sweep"
    # One process for the four. A multirun checks its overrides against the config without the
    # swept experiment, where model.pretrained and the transforms' resize may not exist yet: hence
    # Hydra's add-or-override form (++).
    run_train("-m", f"experiment={','.join(EXPERIMENTS)}", f"data_dir={data_dir}",
              *(f"++{override}" for override in SMALL_RUN), f"hydra.sweep.dir={sweep}")
    for job, (experiment, dataset) in enumerate(EXPERIMENTS.items()):
        run = sweep / str(job)
        summary = json.loads((run / "metrics.json").read_text())
        history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
        train_images = 16 if dataset == "inshop" else 12  # 4 images for each training class
        assert [h["epoch"] for h in history] == [0, 1] and history[1]["step"] == train_images // 4
        expected = {f"recall@{k}" for k in PAPER_RECALL[experiment]} | {"map@r", "r_precision"}
        assert expected <= set(summary["metrics"]), experiment
        assert summary["best_epoch"] == selected_epoch(history, "recall@1")
        queries = 8 if dataset == "inshop" else 12  # In-Shop: the query split; else the test split
        assert summary["metrics"]["num_queries"] == queries
        config = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
        assert (config["dataset"]["name"], config["model"]["backbone"]["arch"]) == (dataset, "resnet50")


def test_a_pairwise_loss_on_a_paper_experiment(data_dir, tmp_path):
    run = tmp_path / "run"
    with hydra_job(["experiment=paper_cub", "loss=contrastive", "miner=multi_similarity", "sampler=m_per_class",
                    "sampler.m=2", f"data_dir={data_dir}", *SMALL_RUN], output_dir=run) as cfg:
        train(cfg)  # in this process: the command line is the multirun's, above
    summary = json.loads((run / "metrics.json").read_text())
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert summary["best_epoch"] == selected_epoch(history, "recall@1")
    assert 0.0 <= summary["metrics"]["recall@32"] <= 1.0
