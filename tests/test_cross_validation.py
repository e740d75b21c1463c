"""protocol=cross_validation: class-disjoint folds of the training classes, selection on the
validation fold, one test of the selected checkpoint, and the folds' concatenated figure."""

import csv
import json
import sys
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from dml_bench import builders
from dml_bench import train as train_module
from dml_bench.data import RetrievalDataset
from dml_bench.data.validation import class_folds, fold_split
from dml_bench.engine.trainer import Trainer
from dml_bench.evaluation import evaluator as evaluator_module
from dml_bench.evaluation import retrieval_metrics
from dml_bench.runtime.errors import UserError
from scripts.collect_results import main as collect_main
from tests.helpers.config import CONFIG_DIR, compose_config
from tests.helpers.tiny_runs import tiny_args, tiny_glyphs

CLASSES = [100 + 3 * c for c in range(10)]  # class ids that are not positions


def dataset_of(tmp_path, images_per_class: dict[int, int]) -> RetrievalDataset:
    rows = [(f"img/{label}_{k}.png", label) for label, n in images_per_class.items() for k in range(n)]
    paths, labels = zip(*rows)
    return RetrievalDataset(tmp_path, "train", transform="train-transform", rows=(paths, labels))


def test_the_protocol_composes():
    cfg = compose_config(["protocol=cross_validation"])
    protocol = cfg.protocol
    assert (protocol.folds, protocol.fold, protocol.split_seed, protocol.validation_fraction) == (4, 0, 0, None)
    assert (cfg.trainer.monitor, cfg.trainer.patience) == ("map@r", 10)
    assert [builders.selection_split(compose_config([f"protocol={name}"]))
            for name in ("paper", "rigorous", "cross_validation")] == ["test", "validation", "validation"]


@pytest.mark.parametrize(("num_classes", "folds"), [(10, 4), (107, 4), (9, 2), (5, 5), (7, 3)])
def test_folds_are_disjoint_cover_every_class_and_differ_by_at_most_one_class(num_classes, folds):
    classes = [100 + 3 * c for c in range(num_classes)]
    parts = class_folds(classes, folds, seed=0)
    assert len(parts) == folds
    assert sorted(c for part in parts for c in part) == classes  # every class in exactly one fold
    sizes = [len(part) for part in parts]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1


def test_folds_are_reproducible_from_the_seed():
    classes = [100 + 3 * c for c in range(40)]
    assert class_folds(classes, 4, seed=0) == class_folds(list(classes), 4, seed=0)
    assert class_folds(classes, 4, seed=0) != class_folds(classes, 4, seed=1)
    assert class_folds(classes, 4, seed=0) != [classes[i::4] for i in range(4)]  # shuffled, not in order


def test_each_fold_validates_once_and_trains_on_the_others(tmp_path):
    sizes = {label: 2 + i % 3 for i, label in enumerate(CLASSES)}
    dataset = dataset_of(tmp_path, sizes)
    parts = class_folds(dataset.classes, 3, seed=5)
    validated = Counter()
    for fold in range(3):
        train, validation = fold_split(dataset, 3, fold, seed=5, validation_transform="test-transform")
        assert validation.classes == parts[fold]
        assert train.classes == sorted(set(CLASSES) - set(parts[fold]))
        for part in (train, validation):  # every image of a class goes with it
            assert len(part) == sum(sizes[c] for c in part.classes)
            assert part.targets == [part.classes.index(label) for label in part.labels]
        assert (train.transform, validation.transform) == ("train-transform", "test-transform")
        validated.update(validation.classes)
    assert validated == Counter(CLASSES)


@pytest.mark.parametrize(("folds", "fold", "match"), [
    (1, 0, "protocol.folds=1"), (11, 0, "protocol.folds=11"), (4, 4, "protocol.fold=4"), (4, -1, "protocol.fold=-1"),
])
def test_impossible_folds_are_user_errors(tmp_path, folds, fold, match):
    with pytest.raises(UserError, match=match):
        fold_split(dataset_of(tmp_path, dict.fromkeys(CLASSES, 2)), folds, fold, seed=0)


@pytest.mark.parametrize(("overrides", "match"), [
    (["protocol=cross_validation", "protocol.validation_fraction=0.2"], "set one of them to null"),
    (["protocol=cross_validation", "protocol.folds=null"], "protocol=cross_validation selects the epoch on a valid"),
    (["protocol=rigorous", "protocol.validation_fraction=null"], "protocol=rigorous selects the epoch on a valid"),
])
def test_a_protocol_without_exactly_one_validation_split_is_refused(overrides, match):
    with pytest.raises(UserError, match=match):
        builders.selection_split(compose_config(overrides))


# ---- real runs, in process -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return tiny_glyphs(tmp_path_factory.mktemp("glyphs"))


def train_in_process(monkeypatch, *args: str) -> None:
    """``python -m dml_bench.train ARGS`` in this process (so that spies see it), without Hydra's
    logging setup."""
    argv = ["dml_bench.train", "--config-path", str(CONFIG_DIR), *args, "hydra/job_logging=none",
            "hydra/hydra_logging=none"]
    monkeypatch.setattr(sys, "argv", argv)
    train_module.main()


@pytest.fixture
def split_events(monkeypatch):
    """The split of every embedding pass of an evaluation, and "selected" when training (and so
    the selection of the epoch) ends: a test metric needs the test split embedded."""
    events = []
    embed = evaluator_module.extract_embeddings

    def spy_embed(model, loader, *args, **kwargs):
        events.append("test" if loader.dataset.split == "test" else "validation")
        return embed(model, loader, *args, **kwargs)

    fit = Trainer.fit

    def spy_fit(self, *args, **kwargs):
        summary = fit(self, *args, **kwargs)
        events.append("selected")
        return summary

    monkeypatch.setattr(evaluator_module, "extract_embeddings", spy_embed)
    monkeypatch.setattr(Trainer, "fit", spy_fit)
    return events


@pytest.mark.parametrize(("protocol", "selected_on", "expected"), [
    ("paper", "test", ["test"] * 3 + ["selected"]),
    ("rigorous", "validation", ["validation"] * 3 + ["selected", "test"]),
    ("cross_validation", "validation", ["validation"] * 3 + ["selected", "test"]),
])
def test_no_test_metric_before_the_epoch_is_selected(tiny_data, tmp_path, monkeypatch,
                                                     split_events, protocol, selected_on, expected):
    # Epochs 0, 1, 2 are evaluated; under protocol=paper on the test split (the spy does see it),
    # otherwise on validation, and the test split only once, after training has ended.
    train_in_process(monkeypatch, *tiny_args(tiny_data, f"protocol={protocol}", "trainer.epochs=2",
                                             f"hydra.run.dir={tmp_path}"))
    assert split_events == expected
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert summary["selected_on"] == selected_on
    assert ("validation_metrics" in summary) == (selected_on == "validation")


def embed_test_split(run_dir, data) -> tuple[torch.Tensor, np.ndarray]:
    """The run's best.pt embedding the test split, outside the builders and the evaluator."""
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    model = instantiate(cfg.model)
    model.load_state_dict(torch.load(run_dir / "checkpoints" / "best.pt", weights_only=False)["model"])
    test = RetrievalDataset(data, "test", instantiate(cfg.dataset.test_transform))
    with torch.no_grad():
        embeddings = model.eval()(torch.stack([test[i][0] for i in range(len(test))]))
    return embeddings, np.array(test.labels)


def test_a_two_fold_multirun_aggregates_and_concatenates(tiny_data, tmp_path, monkeypatch,
                                                          capsys):
    sweep = tmp_path / "sweep"
    train_in_process(monkeypatch, "-m", *tiny_args(tiny_data, "protocol=cross_validation", "protocol.folds=2",
                                                   "protocol.fold=range(2)", "trainer.epochs=1",
                                                   f"hydra.sweep.dir={sweep}"))
    summaries = [json.loads((sweep / job / "metrics.json").read_text()) for job in ("0", "1")]
    assert all(s["selected_on"] == "validation" for s in summaries)
    train_images = sum(1 for _ in open(tiny_data / "splits" / "train.csv")) - 1
    # The two validation folds hold every training image once (each class has several images).
    assert sum(s["validation_metrics"]["num_queries"] for s in summaries) == train_images

    assert collect_main([str(sweep), "--concatenated"]) == 0
    out = capsys.readouterr().out
    with open(sweep / "results.csv") as f:
        (row,) = list(csv.DictReader(f))  # the folds are replicates of one configuration
    assert row["runs"] == "2"
    assert float(row["map@r"]) == pytest.approx(np.mean([s["metrics"]["map@r"] for s in summaries]))
    assert "Concatenated" in out

    # Independently: each fold's model embeds the test split, the L2-normalised embeddings are
    # concatenated along the feature dimension, and the result is evaluated once.
    (embeddings_0, labels), (embeddings_1, labels_1) = (embed_test_split(sweep / job, tiny_data) for job in "01")
    assert np.array_equal(labels, labels_1)
    joined = torch.cat([F.normalize(embeddings_0, dim=1), F.normalize(embeddings_1, dim=1)], dim=1)
    expected = retrieval_metrics(joined, torch.as_tensor(labels), recall_ks=(1, 2, 4, 8))
    similarity = joined.double().numpy() @ joined.double().numpy().T
    np.fill_diagonal(similarity, -np.inf)
    recall_at_1 = np.mean(labels[similarity.argmax(1)] == labels)  # float64 brute force

    with open(sweep / "concatenated.csv") as f:
        (concatenated,) = list(csv.DictReader(f))
    assert (concatenated["folds"], concatenated["status"]) == ("2", "completed")
    assert float(concatenated["recall@1"]) == pytest.approx(recall_at_1, abs=1e-9)
    for name in ("recall@1", "recall@2", "recall@4", "recall@8", "map@r", "r_precision"):
        assert float(concatenated[name]) == pytest.approx(expected[name], abs=1e-6), name
    assert all(float(concatenated["map@r"]) != pytest.approx(s["metrics"]["map@r"]) for s in summaries)


def test_a_missing_fold_is_reported_not_concatenated(tiny_data, tmp_path, monkeypatch, capsys):
    sweep = tmp_path / "sweep"
    train_in_process(monkeypatch, "-m", *tiny_args(tiny_data, "protocol=cross_validation", "protocol.folds=3",
                                                   "protocol.fold=0,2", "trainer.epochs=0",
                                                   f"hydra.sweep.dir={sweep}"))
    assert collect_main([str(sweep), "--concatenated"]) == 0
    with open(sweep / "concatenated.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert row["status"] == "no completed run of fold 1 (of protocol.folds=3)" and row["map@r"] == ""
