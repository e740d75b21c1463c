"""RetrievalEvaluator's options: how leave-one-out excludes the query, euclidean Recall@K beside cosine."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from dml_bench.builders import build_evaluator
from dml_bench.evaluation import retrieval_metrics
from dml_bench.evaluation.evaluator import RetrievalEvaluator
from tests.helpers.config import compose_config


class Points(Dataset):
    """Clustered 4-D points with a few exact cross-class copies, items shaped like RetrievalDataset's."""

    def __init__(self):
        rng = np.random.default_rng(0)
        labels = rng.integers(0, 6, size=40)
        points = rng.standard_normal((6, 4))[labels] + 0.8 * rng.standard_normal((40, 4))
        self.points = torch.tensor(np.concatenate([points, points[:5]]), dtype=torch.float32)
        self.labels = [*labels.tolist(), *((labels[:5] + 1) % 6).tolist()]

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return self.points[index], self.labels[index], index


def evaluate(**options):
    evaluator = RetrievalEvaluator(DataLoader(Points(), batch_size=16), recall_ks=(1, 2, 4), progress=False,
                                   **options)
    return evaluator(nn.Identity(), torch.device("cpu")).metrics


def test_euclidean_recall_is_reported_beside_the_cosine_metrics():
    points = Points()
    cosine = retrieval_metrics(points.points, points.labels, recall_ks=(1, 2, 4))
    euclidean = retrieval_metrics(points.points, points.labels, recall_ks=(1, 2, 4), distance="euclidean")
    assert cosine["recall@1"] != euclidean["recall@1"]  # the two distances rank these points differently
    assert evaluate() == cosine
    assert evaluate(euclidean_recall=True) == cosine | {f"euclidean_recall@{k}": euclidean[f"recall@{k}"]
                                                         for k in (1, 2, 4)}


def test_the_exclusion_mode_reaches_the_search():
    points = Points()
    official = retrieval_metrics(points.points, points.labels, recall_ks=(1, 2, 4), exclude="first_neighbor")
    assert evaluate(exclude="first_neighbor") == official != evaluate()


def test_the_paper_experiments_report_euclidean_recall_and_exclude_by_index():
    for name in ("paper_cub", "paper_cars", "paper_sop", "paper_inshop"):
        cfg = compose_config([f"experiment={name}"])
        evaluator = build_evaluator(cfg, query_loader=None)
        assert (evaluator.euclidean_recall, evaluator.exclude) == (True, "index"), name
    quickstart = build_evaluator(compose_config(["experiment=quickstart"]), query_loader=None)
    assert (quickstart.euclidean_recall, quickstart.exclude) == (False, "index")


@pytest.mark.parametrize("mode", ["index", "first_neighbor"])
def test_evaluation_exclude_is_a_config_choice(mode):
    evaluator = build_evaluator(compose_config([f"evaluation.exclude={mode}"]), query_loader=None)
    assert evaluator.exclude == mode
