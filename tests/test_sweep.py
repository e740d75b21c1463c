"""A two-job multirun (conftest's ``loss_sweep``) and the results table built from it."""

import csv

from scripts.collect_results import main as collect_main


def test_multirun_over_two_losses_and_results_table(loss_sweep, capsys):
    sweep_dir = loss_sweep
    jobs = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir())
    assert jobs == ["0", "1"]
    assert all((sweep_dir / job / "metrics.json").is_file() for job in jobs)

    assert collect_main([str(sweep_dir)]) == 0
    table = capsys.readouterr().out
    header = table.splitlines()[0]
    for column in ("loss", "recall@1", "map@r", "r_precision"):
        assert f" {column} " in header
    assert "| cross_entropy " in table and "| contrastive " in table

    with open(sweep_dir / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["loss"] for r in rows) == ["contrastive", "cross_entropy"]
    assert all(0 <= float(r["recall@1"]) <= 1 for r in rows)
