"""A prepared (miniature) CUB trains with the quickstart recipe, under both protocols; under
protocol=rigorous the reported test metrics are those of the checkpoint selected on validation."""

import json

import pytest
import torch
from hydra.utils import instantiate
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dml_bench.data import RetrievalDataset
from dml_bench.evaluation import retrieval_metrics
from dml_bench.evaluation.per_query import check_against_metrics, load_per_query
from dml_bench.train import train
from tests.helpers.miniature_datasets import prepare_miniature
from tests.helpers.runs import MINIATURE_RUN_OVERRIDES, hydra_job, selected_epoch

TRAIN_CLASSES, TEST_CLASSES, IMAGES_PER_CLASS = (1, 2, 3, 4, 5), (101, 102), 4


@pytest.fixture(scope="module")
def cub_root(tmp_path_factory):
    return prepare_miniature("cub200", tmp_path_factory.mktemp("data"), classes=TRAIN_CLASSES + TEST_CLASSES,
                             images_per_class=IMAGES_PER_CLASS)


def quickstart_on_cub(cub_root, run_dir, *overrides):
    """The run's metrics.json and config; trained in this process."""
    with hydra_job(["experiment=quickstart", "dataset=cub200", f"dataset.root={cub_root}", *MINIATURE_RUN_OVERRIDES,
                    *overrides], output_dir=run_dir) as cfg:
        train(cfg)
    return json.loads((run_dir / "metrics.json").read_text()), cfg


def test_one_quickstart_epoch_on_a_prepared_cub(cub_root, tmp_path, capsys):
    run = tmp_path / "run"
    summary, _ = quickstart_on_cub(cub_root, run)
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[0].startswith("| epoch ") and printed[-1] == f"run folder: {run}"  # selected on test: no caption
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert summary["best_epoch"] == selected_epoch(history, "recall@1") and summary["status"] == "completed"
    assert summary["metrics"]["num_queries"] == len(TEST_CLASSES) * IMAGES_PER_CLASS
    assert "validation_metrics" not in summary  # protocol=paper: selected on the test split


def test_rigorous_protocol_reports_the_test_metrics_of_the_validation_selected_checkpoint(cub_root, tmp_path, capsys):
    run = tmp_path / "run"
    summary, cfg = quickstart_on_cub(cub_root, run, "protocol=rigorous", "trainer.epochs=2")
    # The epoch table says it is the validation split's; the test of the selected epoch, then the run folder, end it.
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[0] == "validation split (the held-out training classes that select the epoch):"
    assert printed[1].startswith("| epoch ") and printed[-1] == f"run folder: {run}"
    assert next(i for i, line in enumerate(printed) if line.startswith("| test (epoch ")) > 1
    assert summary["selected_on"] == "validation" and summary["monitor"] == "map@r"
    # 20 % of 5 training classes: 1 class held out; the test split is untouched.
    assert summary["validation_metrics"]["num_queries"] == IMAGES_PER_CLASS
    assert summary["metrics"]["num_queries"] == len(TEST_CLASSES) * IMAGES_PER_CLASS
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    best = history[selected_epoch(history, "map@r")]  # epoch 0 included; the latest best wins ties
    assert summary["best_epoch"] == best["epoch"] and summary["validation_metrics"] == best["metrics"]
    assert all(h["metrics"]["num_queries"] == IMAGES_PER_CLASS for h in history)

    # Recompute the test metrics from best.pt, outside the trainer.
    model = instantiate(cfg.model)
    state = torch.load(run / "checkpoints" / "best.pt", weights_only=False)
    assert state["epoch"] == summary["best_epoch"]
    model.load_state_dict(state["model"])
    model.eval()
    test = RetrievalDataset(cub_root, "test", instantiate(cfg.dataset.test_transform))
    with torch.no_grad():
        embeddings = torch.cat([model(test[i][0][None]) for i in range(len(test))])
    expected = retrieval_metrics(embeddings, test.labels, recall_ks=list(cfg.evaluation.recall_ks))
    for name, value in expected.items():
        assert summary["metrics"][name] == pytest.approx(value, abs=1e-5), name
    # The per-query values kept with the run are the test split's, of the selected checkpoint.
    values, meta = load_per_query(run / "per_query.npz")
    assert meta["epoch"] == summary["best_epoch"]
    assert check_against_metrics(values, summary["metrics"]) == []
    # So are the retrieval grids and the projector (trainer.log_retrievals, on in the quickstart).
    events = EventAccumulator(str(run / "tb"), size_guidance={"images": 0})
    events.Reload()
    step = next(h["step"] for h in history if h["epoch"] == summary["best_epoch"])
    assert [e.step for e in events.Images("retrievals/worst")] == [step]
    projected = (run / "tb" / f"{step:05d}" / "test" / "metadata.tsv").read_text().splitlines()[1:]
    assert sorted(line.split("\t")[1] for line in projected) == sorted(test.paths)
