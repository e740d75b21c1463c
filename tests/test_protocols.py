"""protocol=rigorous: the class-disjoint validation split and early stopping on its metric."""

import json

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from dml_bench.data import RetrievalDataset
from dml_bench.data.validation import class_disjoint_split
from dml_bench.engine.recorders import RunFiles
from dml_bench.engine.trainer import Trainer, TrainerSettings
from dml_bench.evaluation.evaluator import Evaluation
from dml_bench.losses import CrossEntropyLoss
from dml_bench.runtime.errors import UserError
from dml_bench.runtime.files import read_jsonl
from tests.helpers.config import CONFIG_DIR, compose_config


def write_split(root, images_per_class: dict[int, int]) -> RetrievalDataset:
    """splits/train.csv listing ``n`` images (tiny real PNGs) for each class id."""
    (root / "splits").mkdir(parents=True)
    lines = ["path,label"]
    for label, n in images_per_class.items():
        for k in range(n):
            path = f"img/{label}_{k}.png"
            (root / "img").mkdir(exist_ok=True)
            Image.new("RGB", (4, 4), (label % 256, k, 0)).save(root / path)
            lines.append(f"{path},{label}")
    (root / "splits" / "train.csv").write_text("\n".join(lines) + "\n")
    return RetrievalDataset(root, "train", transform="train-transform")


def test_protocol_options_compose():
    assert {p.stem for p in (CONFIG_DIR / "protocol").glob("*.yaml")} == {"paper", "rigorous", "cross_validation"}
    assert compose_config([]).protocol.name == "paper"
    cfg = compose_config(["protocol=rigorous"])
    assert (cfg.protocol.validation_fraction, cfg.protocol.split_seed) == (0.2, 0)
    assert (cfg.trainer.monitor, cfg.trainer.patience) == ("map@r", 10)


def test_validation_takes_a_fifth_of_the_classes_with_all_their_images(tmp_path):
    sizes = {100 + c: 2 + c % 3 for c in range(10)}
    dataset = write_split(tmp_path, sizes)
    train, validation = class_disjoint_split(dataset, 0.2, seed=0, validation_transform="test-transform")
    assert len(validation.classes) == 2 and len(train.classes) == 8
    assert not set(train.classes) & set(validation.classes)
    for part in (train, validation):
        assert len(part) == sum(sizes[c] for c in part.classes)
        assert part.targets == [part.classes.index(label) for label in part.labels]
        assert all(dataset.labels[dataset.paths.index(p)] == label for p, label in zip(part.paths, part.labels))
    assert (train.transform, validation.transform) == ("train-transform", "test-transform")
    validation.transform = None
    image, target, index = validation[1]
    assert image.shape == (3, 4, 4) and (target, index) == (validation.targets[1], 1)


def test_the_split_is_seeded(tmp_path):
    dataset = write_split(tmp_path, {c: 2 for c in range(1, 21)})
    held_out = [class_disjoint_split(dataset, 0.25, seed)[1].classes for seed in (0, 0, 1)]
    assert held_out[0] == held_out[1] and held_out[0] != held_out[2]
    assert len(held_out[0]) == 5


@pytest.mark.parametrize(("fraction", "sizes"), [(0.0, {1: 2, 2: 2}), (1.0, {1: 2, 2: 2}), (0.5, {1: 3})])
def test_impossible_splits_are_user_errors(tmp_path, fraction, sizes):
    with pytest.raises(UserError, match="protocol.validation_fraction"):
        class_disjoint_split(write_split(tmp_path, sizes), fraction, seed=0)


def test_at_least_one_class_on_each_side(tmp_path):
    dataset = write_split(tmp_path, {1: 2, 2: 2, 3: 2})
    assert len(class_disjoint_split(dataset, 0.01, 0)[1].classes) == 1
    assert len(class_disjoint_split(dataset, 0.99, 0)[0].classes) == 1


class ScriptedEvaluator:
    """Returns the next of the given MAP@R values at each evaluation: the sequence early stopping
    must react to (the real evaluator's values cannot be chosen in advance)."""

    def __init__(self, values, monitor="map@r"):
        self.values, self.monitor = iter(values), monitor

    def __call__(self, model, device, amp_dtype=None):
        return Evaluation({"map@r": 0.5, "recall@1": 0.5, self.monitor: next(self.values), "num_queries": 4}, {})


def make_trainer(run_dir, values, patience, epochs=10, monitor="map@r", monitor_decimals=None):
    torch.manual_seed(0)
    images, targets = torch.randn(8, 3), torch.tensor([0, 1, 2, 3] * 2)
    loader = DataLoader(TensorDataset(images, targets, torch.arange(8)), batch_size=4)
    model = torch.nn.Linear(3, 2)
    model.embedding_size = 2
    loss = CrossEntropyLoss(num_classes=4, embedding_size=2)
    optimizer = torch.optim.SGD([*model.parameters(), *loss.parameters()], lr=0.1)
    settings = TrainerSettings(run_dir=run_dir, epochs=epochs, monitor=monitor, monitor_decimals=monitor_decimals,
                               patience=patience, progress=False)
    return Trainer(model, loss, optimizer, loader, ScriptedEvaluator(values, monitor), settings,
                   recorder=RunFiles(run_dir))


def checkpoint_epochs(run_dir):
    return tuple(torch.load(run_dir / "checkpoints" / name, weights_only=False)["epoch"]
                 for name in ("best.pt", "last.pt"))


def test_training_stops_after_patience_evaluations_without_a_new_best(tmp_path):
    # MAP@R after epochs 0, 1, 2, ...: epoch 2 is the best; epochs 3, 4 and 5 do not reach it, so
    # training stops after epoch 5 and never sees the 0.9 that follows.
    values = [0.1, 0.2, 0.4, 0.3, 0.38, 0.35, 0.9, 0.9, 0.9, 0.9, 0.9]
    summary = make_trainer(tmp_path, values, patience=3).fit()
    assert [r["epoch"] for r in read_jsonl(tmp_path / "history.jsonl")] == [0, 1, 2, 3, 4, 5]
    assert (summary["best_epoch"], summary["last_epoch"], summary["metrics"]["map@r"]) == (2, 5, 0.4)
    assert checkpoint_epochs(tmp_path) == (2, 5)
    assert json.loads((tmp_path / "metrics.json").read_text())["last_epoch"] == 5


def test_a_tie_goes_to_the_later_epoch_and_restarts_the_patience(tmp_path):
    # Epoch 4 ties epoch 2: it becomes the best, so the three evaluations counted from it are 5, 6, 7.
    values = [0.1, 0.2, 0.4, 0.3, 0.4, 0.35, 0.3, 0.2, 0.9, 0.9, 0.9]
    summary = make_trainer(tmp_path, values, patience=3).fit()
    assert (summary["best_epoch"], summary["last_epoch"]) == (4, 7)
    assert checkpoint_epochs(tmp_path) == (4, 7)


@pytest.mark.parametrize("decimals, best_epoch", [(2, 2), (None, 1)])
def test_the_paper_protocol_compares_recall_at_1_in_percent_rounded_to_two_decimals(tmp_path, decimals, best_epoch):
    # SOP's 60,502 test queries: 47,000 hits (77.6833%) after epoch 1 and 46,999 (77.6817%) after
    # epoch 2 both round to 77.68, so the official code takes epoch 2 (a tie goes to the later
    # epoch); unrounded, epoch 1 stays the best.
    hits = [30000, 47000, 46999]
    assert round(100 * hits[1] / 60502, 2) == round(100 * hits[2] / 60502, 2) == 77.68
    summary = make_trainer(tmp_path, [h / 60502 for h in hits], patience=None, epochs=2, monitor="recall@1",
                           monitor_decimals=decimals).fit()
    assert summary["best_epoch"] == best_epoch
    assert summary["metrics"]["recall@1"] == hits[best_epoch] / 60502  # reported unrounded


def test_protocol_paper_sets_two_decimals_and_the_others_none():
    assert compose_config(["protocol=paper"]).trainer.monitor_decimals == 2
    assert compose_config(["protocol=rigorous"]).trainer.monitor_decimals is None
    assert compose_config(["protocol=cross_validation"]).trainer.monitor_decimals is None


def test_the_untrained_model_is_a_candidate_and_patience_counts_from_it(tmp_path):
    # Epoch 0 (before training) is the best; patience 2 stops after epochs 1 and 2, and best.pt
    # holds the untrained weights.
    trainer = make_trainer(tmp_path, [0.5, 0.4, 0.3, 0.2, 0.1], patience=2, epochs=4)
    untrained = {name: value.clone() for name, value in trainer.model.state_dict().items()}
    summary = trainer.fit()
    assert (summary["best_epoch"], summary["last_epoch"], summary["metrics"]["map@r"]) == (0, 2, 0.5)
    assert checkpoint_epochs(tmp_path) == (0, 2)
    best = torch.load(tmp_path / "checkpoints" / "best.pt", weights_only=False)["model"]
    assert all(torch.equal(best[name], value) for name, value in untrained.items())
    assert not torch.equal(trainer.model.weight, untrained["weight"])  # training did change them


def test_without_patience_every_epoch_runs(tmp_path):
    summary = make_trainer(tmp_path, [0.5, 0.4, 0.3, 0.2, 0.1], patience=None, epochs=4).fit()
    assert (summary["best_epoch"], summary["last_epoch"]) == (0, 4)


def test_a_run_that_stopped_early_stays_stopped_when_resumed(tmp_path):
    values = [0.1, 0.2, 0.4, 0.3, 0.38, 0.35, 0.9, 0.9, 0.9, 0.9, 0.9]
    make_trainer(tmp_path, values, patience=3).fit()
    summary = make_trainer(tmp_path, values, patience=3).fit(resume_from=tmp_path / "checkpoints" / "last.pt")
    assert [r["epoch"] for r in read_jsonl(tmp_path / "history.jsonl")] == [0, 1, 2, 3, 4, 5]
    assert (summary["best_epoch"], summary["last_epoch"]) == (2, 5)
