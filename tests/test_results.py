"""The results table: seeds aggregated (mean ± 95% Student t CI half-width, count), and paper runs
set against the paper; failed runs with their error line, killed ones with how far they got. Run folders are
written here in the format every run leaves behind."""

import csv
import json
import statistics

import pytest
import yaml
from scipy import stats

from dml_bench.comparison.aggregate import collect
from dml_bench.comparison.runs import read_run, read_runs
from scripts.collect_results import main as collect_main


def write_run(folder, overrides: list[str], metrics: dict | None, error: str | None = None):
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps({"metrics": metrics, "best_epoch": 3, "status": "completed"}))
    if error is not None:
        (folder / "train.log").write_text(f"[2026-11-28 12:00:00,000][dml_bench][ERROR] - {error}\n")


R1 = {("cross_entropy", 0): 0.70, ("cross_entropy", 1): 0.68, ("cross_entropy", 2): 0.69,
      ("contrastive", 0): 0.60, ("contrastive", 1): 0.64}


def sweep_of_seeds(root):
    for job, ((loss, seed), recall) in enumerate(R1.items()):
        write_run(root / str(job), ["experiment=paper_cub", f"loss={loss}", f"seed={seed}"],
                  {"recall@1": recall, "recall@2": recall + 0.1, "map@r": recall / 2, "num_queries": 10})
    write_run(root / "9", ["experiment=paper_cub", "loss=contrastive", "seed=2"], None, error="The loss became nan")


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def t_half_width(values):
    """Half the width of scipy's 95% Student t interval of the mean."""
    low, high = stats.t.interval(0.95, len(values) - 1, loc=statistics.mean(values), scale=stats.sem(values))
    return (high - low) / 2


def test_seeds_are_aggregated_into_mean_ci_and_count(tmp_path, capsys):
    sweep_of_seeds(tmp_path)
    assert collect_main([str(tmp_path)]) == 0
    text = capsys.readouterr().out
    ce = [R1["cross_entropy", s] for s in range(3)]
    line = next(row for row in text.splitlines() if row.startswith("| cross_entropy "))
    assert f"{statistics.mean(ce):.4f} ± {t_half_width(ce):.4f}" in line and "| 3 " in line
    contrastive_line = next(row for row in text.splitlines() if row.startswith("| contrastive "))
    assert "| 2 " in contrastive_line and "1 failed: The loss became nan" in contrastive_line
    caption, header = text.splitlines()[:2]
    assert "95% CI" in caption and "Student t" in caption
    assert header.startswith("| ") and " seed " not in header and "| runs |" in header

    rows = {row["loss"]: row for row in read_csv(tmp_path / "results.csv")}
    assert set(rows) == {"cross_entropy", "contrastive"}
    assert float(rows["cross_entropy"]["recall@1"]) == statistics.mean(ce)
    assert float(rows["cross_entropy"]["recall@1_std"]) == statistics.stdev(ce)
    assert float(rows["cross_entropy"]["recall@1_ci95"]) == pytest.approx(t_half_width(ce), rel=1e-12)
    assert float(rows["contrastive"]["map@r"]) == statistics.mean([0.30, 0.32])
    assert rows["cross_entropy"]["runs"] == "3" and rows["contrastive"]["runs"] == "2"


def test_paper_experiments_are_set_against_the_paper(tmp_path, capsys):
    sweep_of_seeds(tmp_path)
    collect_main([str(tmp_path)])
    text = capsys.readouterr().out
    comparison = text[text.index("Against the paper"):].splitlines()
    assert "paper (%)" in comparison[1] and "difference" in comparison[1]
    ce_at_1 = next(r for r in comparison if r.startswith("| cross_entropy ") and "| 1 " in r)
    assert "| 69.0 ± 1.0 " in ce_at_1 and "| 69.2 " in ce_at_1 and "| -0.2 " in ce_at_1
    ce_at_2 = next(r for r in comparison if r.startswith("| cross_entropy ") and "| 2 " in r)
    assert "| 79.0 ± 1.0 " in ce_at_2 and "| 79.2 " in ce_at_2 and "| -0.2 " in ce_at_2
    # K=4..32 were not measured in these runs: the paper's number, no difference.
    ce_at_32 = next(r for r in comparison if r.startswith("| cross_entropy ") and "| 32 " in r)
    assert "| 97.3 " in ce_at_32


def test_per_run_table_keeps_one_row_per_run(tmp_path, capsys):
    sweep_of_seeds(tmp_path)
    assert collect_main([str(tmp_path), "--per-run", "--csv", str(tmp_path / "runs.csv")]) == 0
    rows = read_csv(tmp_path / "runs.csv")
    assert len(rows) == 6 and {r["seed"] for r in rows} == {"0", "1", "2"}
    assert sum(r["status"].startswith("failed") for r in rows) == 1


def test_runs_outside_paper_experiments_get_no_comparison(tmp_path, capsys):
    for seed in (0, 1):
        write_run(tmp_path / str(seed), ["experiment=quickstart", f"seed={seed}"], {"recall@1": 0.5 + seed / 10})
    collect_main([str(tmp_path)])
    text = capsys.readouterr().out
    assert "Against the paper" not in text and f"0.5500 ± {t_half_width([0.5, 0.6]):.4f}" in text  # 0.6353


def test_a_single_run_has_no_ci(tmp_path, capsys):
    write_run(tmp_path / "0", ["loss=a"], {"recall@1": 0.5})
    write_run(tmp_path / "1", ["loss=b"], {"recall@1": 0.25})
    text, _, rows = collect(read_runs([tmp_path]))
    assert "| 0.5000   |" in text and "±" not in text.split(":\n", 1)[1]
    assert rows == [["a", 1, "test", 0.5, None, None, "completed"], ["b", 1, "test", 0.25, None, None, "completed"]]


def test_a_failed_run_reports_its_error_line(tmp_path):
    write_run(tmp_path / "0", ["seed=0"], None, error="The loss became nan at epoch 1, step 5. Lower the lr.")
    record = read_run(tmp_path / "0")
    assert record["status"] == "failed" and record["overrides"] == {"seed": "0"}
    assert record["error"] == "The loss became nan at epoch 1, step 5. Lower the lr."


def test_a_killed_run_says_how_far_it_got_and_how_to_continue(tmp_path):
    write_run(tmp_path, [], None)
    (tmp_path / "history.jsonl").write_text("".join(json.dumps({"epoch": e, "metrics": {}}) + "\n" for e in range(3)))
    assert read_run(tmp_path)["error"] == (f"no metrics.json: still running, or killed after epoch 2 "
                                           f"(continue it with resume={tmp_path})")


def test_per_run_table_lists_jobs_in_numeric_order(tmp_path):
    for job in (2, 10):
        write_run(tmp_path / str(job), [f"seed={job}"], {"recall@1": job / 100, "num_queries": 5})
    write_run(tmp_path / "1", ["seed=1"], None, error="ValueError: bad m")
    _, headers, rows = collect(read_runs([tmp_path]), per_run=True)
    assert headers == ["run", "seed", "recall@1", "selected_on", "best_epoch", "status"]
    # the failed run selected nothing: its selected_on is empty
    assert rows == [["1", "1", None, "", None, "failed: ValueError: bad m"],
                    ["2", "2", 0.02, "test", 3, "completed"],
                    ["10", "10", 0.1, "test", 3, "completed"]]


def test_runs_of_several_sweeps_are_named_by_their_path_below_the_shared_folder(tmp_path, capsys):
    for sweep in ("a", "b"):
        write_run(tmp_path / "sweeps" / sweep / "0", [f"loss={sweep}"], {"recall@1": 0.5})
    _, headers, rows = collect(read_runs([tmp_path / "sweeps" / "a", tmp_path / "sweeps" / "b"]), per_run=True)
    assert [row[0] for row in rows] == ["a/0", "b/0"]
    assert collect_main([str(tmp_path / "sweeps" / "a"), str(tmp_path / "nowhere")]) == 1
    assert f"{tmp_path / 'nowhere'}: no such folder" in capsys.readouterr().err


def write_card(folder, **fields):
    """run_info.json with an audit card: a ResNet-50 of the paper's recipe, changed by ``fields``."""
    card = {"backbone": "TorchvisionBackbone(resnet50)", "weights": "/hub/resnet50-0676ba61.pth",
            "weights_sha256": "0676ba61" + "0" * 56, "embedding_size": 2048, "selected_on": "test",
            "train_images": {"crop": 224, "resize": 256}, "test_images": {"crop": 224, "resize": 256}, **fields}
    (folder / "run_info.json").write_text(json.dumps({"seed": 0, "audit": card}))


def test_selected_on_is_a_column_test_unless_the_run_says_validation(tmp_path):
    write_run(tmp_path / "0", ["protocol=paper"], {"recall@1": 0.5})
    write_run(tmp_path / "1", ["protocol=rigorous"], {"recall@1": 0.4})
    summary = json.loads((tmp_path / "1" / "metrics.json").read_text())
    (tmp_path / "1" / "metrics.json").write_text(json.dumps({**summary, "selected_on": "validation"}))
    write_run(tmp_path / "2", ["protocol=rigorous"], None, error="killed in the final test")
    write_card(tmp_path / "2", selected_on="validation")  # a failed run: its card says what would have selected
    headers, rows = collect(read_runs([tmp_path]), per_run=True)[1:]
    column = headers.index("selected_on")
    assert [row[column] for row in rows] == ["test", "validation", "validation"]
    text, headers, rows = collect(read_runs([tmp_path]))
    assert "| selected_on |" in text.splitlines()[1]
    assert [row[headers.index("selected_on")] for row in rows] == ["test", "validation"]


def test_runs_that_differ_in_what_makes_numbers_comparable_are_named_in_a_warning(tmp_path, capsys):
    small_cnn = {"backbone": "SmallConvNet", "weights": "random init", "weights_sha256": None}
    for job, fields in enumerate([{}, {}, small_cnn, {"embedding_size": 512, "weights": "/elsewhere/copy.pth"}]):
        write_run(tmp_path / str(job), [f"seed={job}"], {"recall@1": 0.5})
        write_card(tmp_path / str(job), **fields)
    write_run(tmp_path / "4", ["seed=4"], {"recall@1": 0.5})  # an older run without a card: left out
    assert collect_main([str(tmp_path)]) == 0
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: these runs differ in backbone: TorchvisionBackbone(resnet50) (3 runs: 0, 1, 3); "
        "SmallConvNet (1 run: 2)",
        "warning: these runs differ in weights: sha256 0676ba6100000000 (3 runs: 0, 1, 3); random init (1 run: 2)",
        "warning: these runs differ in embedding_size: 2048 (3 runs: 0, 1, 2); 512 (1 run: 3)",
    ]  # the same weights file elsewhere (run 3) is the same weights


def test_comparable_runs_get_no_warning(tmp_path):
    for job in range(2):
        write_run(tmp_path / str(job), [f"seed={job}"], {"recall@1": 0.5})
        write_card(tmp_path / str(job))
    assert "warning" not in collect(read_runs([tmp_path]))[0]
    write_card(tmp_path / "1", test_images={"crop": 224, "resize": [256, 256]})
    assert collect(read_runs([tmp_path]))[0].splitlines()[-1] == (
        "warning: these runs differ in test_images: 224 px crops of images resized to 256 (1 run: 0); "
        "224 px crops of images resized to [256, 256] (1 run: 1)")


def test_a_status_cell_shows_the_first_line_of_the_error_cut_to_a_readable_width(tmp_path):
    error = ("The loss became nan at epoch 3, step 1234. The last good checkpoint is "
             "/scratch/me/outputs/multirun/2026-01-31/12-00-00/1/checkpoints/last.pt. Lower the learning rate.")
    write_run(tmp_path / "1", ["seed=1"], None, error=error)
    with open(tmp_path / "1" / "train.log", "a") as log:  # a traceback, then submitit's own ERROR line
        log.write("Traceback (most recent call last):\n  File \"train.py\", line 1\nValueError: nan\n"
                  "[2026-11-28 12:00:01,000][submitit][ERROR] - Submitted job triggered an exception\n")
    _, headers, rows = collect(read_runs([tmp_path]), per_run=True)
    assert rows[0][headers.index("status")] == "failed: " + error[:79] + "…"
    _, _, rows = collect(read_runs([tmp_path]))
    assert rows[0][-1] == "1 failed: " + error[:79] + "…"
