"""A two-job multirun (conftest's ``loss_sweep``), the results table built from it, and its jobs'
names in TensorBoard."""

import csv
import shutil

from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

from dml_bench.train import train
from scripts.collect_results import main as collect_main
from tests.helpers.runs import LOSS_SWEEP, fast_overrides, hydra_job


def tensorboard_runs(folder) -> list[str]:
    """The runs TensorBoard lists for ``tensorboard --logdir folder``."""
    return sorted(EventMultiplexer().AddRunsFromDirectory(str(folder)).Runs())


def test_multirun_over_two_losses_and_results_table(loss_sweep, capsys):
    sweep_dir = loss_sweep
    jobs = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir())
    assert jobs == ["0", "1"]
    assert all((sweep_dir / job / "metrics.json").is_file() for job in jobs)
    assert all((sweep_dir / job / "scalars.csv").is_file() for job in jobs)
    # Named by what the sweep varies, not by the job number alone.
    assert tensorboard_runs(sweep_dir) == ["0/tb/loss=cross_entropy", "1/tb/loss=contrastive"]

    assert collect_main([str(sweep_dir)]) == 0
    table = capsys.readouterr().out
    caption, header = table.splitlines()[:2]
    assert "95% CI" in caption
    for column in ("loss", "recall@1", "map@r", "r_precision", "selected_on"):
        assert f" {column} " in header
    assert "| cross_entropy " in table and "| contrastive " in table
    assert "warning" not in table  # the same backbone, weights, embedding and images

    with open(sweep_dir / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["loss"] for r in rows) == ["contrastive", "cross_entropy"]
    assert all(0 <= float(r["recall@1"]) <= 1 for r in rows)


def test_a_job_resumed_later_writes_its_events_under_the_same_name(loss_sweep, tmp_path):
    sweep_dir = tmp_path / "sweep"  # a copy: the session's sweep stays as other tests read it
    shutil.copytree(loss_sweep, sweep_dir)
    job = sweep_dir / "0"
    overrides = [o for o in LOSS_SWEEP if not o.startswith("loss=")]
    with hydra_job([*overrides, *fast_overrides(), "loss=cross_entropy", f"resume={job}"]) as cfg:
        train(cfg)  # in this process, in the job's folder (test_resume runs resume's command lines)
    assert tensorboard_runs(sweep_dir) == ["0/tb/loss=cross_entropy", "1/tb/loss=contrastive"]
    assert len(list((job / "tb" / "loss=cross_entropy").glob("events.out.tfevents.*"))) == 2
