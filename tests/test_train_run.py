"""A real one-epoch CPU training run on the embedded data leaves every promised file behind."""

import json
import subprocess

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dml_bench.evaluation.metric_names import MAP_AT_R, R_PRECISION, eval_tag, recall_key
from tests.helpers.config import ROOT
from tests.helpers.runs import selected_epoch, tensorboard_dir

METRICS = [recall_key(k) for k in (1, 2, 4, 8)] + [MAP_AT_R, R_PRECISION]


def test_run_writes_every_file(quickstart_run):
    for name in ("metrics.json", "history.jsonl", "run_info.json", "checkpoints/last.pt",
                 "checkpoints/best.pt", ".hydra/config.yaml", ".hydra/overrides.yaml"):
        assert (quickstart_run / name).is_file(), name
    assert list(tensorboard_dir(quickstart_run).glob("events.out.tfevents.*"))


def test_metrics_json_holds_the_selected_epoch(quickstart_run):
    summary = json.loads((quickstart_run / "metrics.json").read_text())
    history = [json.loads(line) for line in (quickstart_run / "history.jsonl").read_text().splitlines()]
    assert summary["best_epoch"] == selected_epoch(history, "recall@1") and summary["status"] == "completed"
    assert summary["metrics"] == history[summary["best_epoch"]]["metrics"]
    assert summary["selected_on"] == "test"  # protocol=paper
    for name in METRICS:
        assert 0.0 <= summary["metrics"][name] <= 1.0
    assert summary["metrics"]["num_queries"] > 100


def test_history_has_epoch_zero_and_every_evaluation(quickstart_run):
    lines = [json.loads(line) for line in (quickstart_run / "history.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [0, 1]
    assert lines[0]["train_loss"] is None and lines[1]["train_loss"] > 0
    assert set(METRICS) <= set(lines[1]["metrics"])


def test_run_info_records_provenance(quickstart_run):
    info = json.loads((quickstart_run / "run_info.json").read_text())
    assert info["seed"] == 0 and info["device"].startswith("cpu") and info["tf32"] is False
    assert {"torch", "pytorch-metric-learning", "hydra-core"} <= set(info["packages"])
    head = checkout_head()  # the run's commit, "-dirty" when it had changes to tracked files
    commit = info["git_commit"]
    assert commit is None if head is None else isinstance(commit, str) and commit.removesuffix("-dirty") == head


def checkout_head() -> str | None:
    """The commit git says the checkout the run came from is at; None outside a git checkout."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def test_checkpoint_holds_everything_to_resume(quickstart_run):
    state = torch.load(quickstart_run / "checkpoints" / "last.pt", weights_only=False)
    assert {"model", "loss", "optimizer", "scheduler", "epoch", "global_step", "best", "rng", "config"} <= set(state)
    assert state["epoch"] == 1 and "classifier.weight" in state["loss"]


def test_tensorboard_events_hold_the_listed_tags(quickstart_run):
    events = EventAccumulator(str(tensorboard_dir(quickstart_run)))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr"} <= tags
    assert {eval_tag(name) for name in METRICS} <= tags
    assert [e.step for e in events.Scalars(eval_tag(MAP_AT_R))][0] == 0
    assert len(events.Scalars(eval_tag(recall_key(1)))) == 2
