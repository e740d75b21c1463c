"""A run on a prepared (miniature) VehicleID evaluates the test set ``dataset.test_size`` names,
leave-one-out over the whole set, at the published K (docs/reference/dataset-formats.md)."""

import json

from dml_bench.data.split_files import read_split, split_file
from dml_bench.train import train
from tests.helpers.miniature_datasets import prepare_miniature
from tests.helpers.runs import MINIATURE_RUN_OVERRIDES, hydra_job


def test_a_run_evaluates_the_medium_test_set_leave_one_out(tmp_path):
    root = prepare_miniature("vehicleid", tmp_path / "data", classes=tuple(range(1, 13)), images_per_class=3)
    medium = read_split(split_file(root, "test_medium"))
    assert len(medium) == 6 and len({label for _, label in medium}) == 2  # the small set's vehicle and one more
    run = tmp_path / "run"
    with hydra_job(["experiment=quickstart", "dataset=vehicleid", f"dataset.root={root}", "dataset.test_size=medium",
                    "evaluation.recall_ks=[1,5]", *MINIATURE_RUN_OVERRIDES], output_dir=run) as cfg:
        assert cfg.dataset.query_split == "test_medium" and cfg.dataset.gallery_split is None
        train(cfg)
    summary = json.loads((run / "metrics.json").read_text())
    metrics = summary["metrics"]
    assert metrics["num_queries"] == len(medium)  # every image of the set is a query, among the others
    assert set(metrics) >= {"recall@1", "recall@5", "map@r"} and metrics["recall@5"] == 1.0  # 5 = all the others
