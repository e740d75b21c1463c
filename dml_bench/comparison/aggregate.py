"""Runs that differ only in ``seed`` (or ``protocol.fold``) as one row: the mean and the
half-width of its 95% Student t confidence interval, and the number of runs; runs of a paper
experiment are also set against the paper's published Recall@K.
"""

import csv
import statistics
from pathlib import Path

from dml_bench.comparison.runs import REPLICATES, metric_columns, run_labels, varying_overrides
from dml_bench.comparison.significance import t_half_width
from dml_bench.data.benchmarks import SPECS
from dml_bench.engine.audit import compared_fields
from dml_bench.evaluation.metric_names import recall_key
from dml_bench.runtime.tables import markdown_table

CI_CAPTION = ("mean ± 95% CI half-width (Student t, n - 1 degrees of freedom, n = runs; no CI for one run) "
              "over the runs that differ only in seed or protocol.fold")


# The paper's cross-entropy Recall@K in % (ResNet-50, 2048-d), by the experiment reproducing it:
# each benchmark's spec holds its own (dml_bench.data.benchmarks; source: docs/reference/recipe.md).
PAPER_RECALL = {spec.experiment: dict(spec.paper_recall) for spec in SPECS if spec.paper_recall}


def results_table(records: list[dict]) -> tuple[list[str], list[list]]:
    override_keys = varying_overrides(records)
    metric_names = metric_columns(records)
    headers = ["run", *override_keys, *metric_names, "selected_on", "best_epoch", "status"]
    labels = run_labels(records)
    rows = []
    for r in records:
        status = r["status"] if r["status"] != "failed" else f"failed: {r['error']}"
        rows.append([labels[r["run"]], *(r["overrides"].get(k, "") for k in override_keys),
                     *(r["metrics"].get(m) for m in metric_names), r["selected_on"], r["best_epoch"], status])
    return headers, rows


def write_csv(path: Path, headers: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(headers)
        writer.writerows(rows)


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (None for fewer than two values)."""
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def grouped(records: list[dict]) -> tuple[list[str], dict[tuple, list[dict]]]:
    """The overrides that vary between runs, seed and fold aside, and the runs by their values."""
    keys = [k for k in varying_overrides(records) if k not in REPLICATES]
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault(tuple(r["overrides"].get(k, "") for k in keys), []).append(r)
    return keys, groups


def aggregate(records: list[dict]) -> tuple[list[str], list[str], list[dict]]:
    """Group runs that differ only in ``seed`` (or ``protocol.fold``): (override keys, metric
    names, one dict per group with its ``config``, ``experiment``, completed ``runs``,
    ``errors``, per-metric ``stats`` (mean, std) and ``ci`` (95% Student t half-width))."""
    keys, groups = grouped(records)
    names = metric_columns(records)
    summaries = []
    for values, runs in groups.items():
        done = [r for r in runs if r["status"] != "failed"]
        per_metric = {m: [r["metrics"][m] for r in done if m in r["metrics"]] for m in names}
        summaries.append({
            "config": dict(zip(keys, values)),
            "experiment": runs[0]["overrides"].get("experiment"),
            "runs": len(done),
            "selected_on": ", ".join(sorted({r["selected_on"] for r in runs if r["selected_on"]})),
            "errors": [r["error"] for r in runs if r["status"] == "failed"],
            "stats": {m: mean_std(v) for m, v in per_metric.items()},
            "ci": {m: t_half_width(v) for m, v in per_metric.items()},
        })
    return keys, names, summaries


def _mean_pm_std(mean: float | None, std: float | None, scale: float = 1.0, digits: int = 4) -> str:
    """``mean ± spread`` (a std or a CI half-width), or the mean alone without one."""
    if mean is None:
        return ""
    text = f"{mean * scale:.{digits}f}"
    return text if std is None else f"{text} ± {std * scale:.{digits}f}"


def _status(group: dict) -> str:
    return f"{len(group['errors'])} failed: {group['errors'][0]}" if group["errors"] else "completed"


def aggregate_table(records: list[dict]) -> tuple[str, list[str], list[list]]:
    """Markdown (mean ± 95% CI half-width per metric) and CSV (mean, ``<metric>_std`` and
    ``<metric>_ci95``, the half-width, columns) of the groups."""
    keys, names, groups = aggregate(records)
    text_rows, csv_rows = [], []
    for g in groups:
        config = [g["config"][k] for k in keys]
        cells = (_mean_pm_std(g["stats"][m][0], g["ci"][m]) for m in names)
        text_rows.append([*config, g["runs"], g["selected_on"], *cells, _status(g)])
        values = (v for m in names for v in (*g["stats"][m], g["ci"][m]))
        csv_rows.append([*config, g["runs"], g["selected_on"], *values, _status(g)])
    text = markdown_table([*keys, "runs", "selected_on", *names, "status"], text_rows)
    csv_headers = [*keys, "runs", "selected_on", *(h for m in names for h in (m, f"{m}_std", f"{m}_ci95")), "status"]
    return text, csv_headers, csv_rows


def paper_comparison(records: list[dict]) -> str | None:
    """For groups run with a paper experiment: their Recall@K next to the paper's, in %."""
    keys, _, groups = aggregate(records)
    shown = [k for k in keys if k != "experiment"]
    rows = []
    for g in groups:
        for k, paper in PAPER_RECALL.get(g["experiment"], {}).items():
            mean, std = g["stats"].get(recall_key(k), (None, None))
            difference = "" if mean is None else f"{mean * 100 - paper:+.1f}"
            rows.append([*(g["config"][key] for key in shown), g["experiment"], k, g["runs"],
                         _mean_pm_std(mean, std, 100, 1), f"{paper:.1f}", difference])
    if not rows:
        return None
    return markdown_table([*shown, "experiment", "K", "runs", "Recall@K (%)", "paper (%)", "difference (points)"], rows)


def comparability_warnings(records: list[dict]) -> list[str]:
    """One line per field of the audit card (``engine.audit.compared_fields``) in which the runs
    differ, with each value and the runs that have it; runs without a card are left out."""
    labels = run_labels(records)
    carded = [(labels[r["run"]], compared_fields(r["audit"])) for r in records if r.get("audit")]
    warnings = []
    for field in (carded[0][1] if carded else {}):
        runs_by_value: dict[str, list[str]] = {}
        for run, fields in carded:
            runs_by_value.setdefault(fields[field], []).append(run)
        if len(runs_by_value) > 1:
            values = "; ".join(f"{value} ({len(runs)} run{'s' * (len(runs) > 1)}: {', '.join(runs[:3])}"
                               f"{', ...' if len(runs) > 3 else ''})" for value, runs in runs_by_value.items())
            warnings.append(f"warning: these runs differ in {field}: {values}")
    return warnings


def collect(records: list[dict], *, per_run: bool = False) -> tuple[str, list[str], list[list]]:
    """The text to print and the CSV headers and rows of ``records`` (``read_runs``): one row per
    group of seeds (mean ± 95% CI), or one per run with ``per_run``; then the paper comparison
    when paper experiments are among the runs."""
    if per_run:
        headers, rows = results_table(records)
        text = markdown_table(headers, rows)
    else:
        text, headers, rows = aggregate_table(records)
        text = f"{CI_CAPTION}:\n{text}"
    comparison = paper_comparison(records)
    if comparison:
        text += ("\n\nAgainst the paper (cross-entropy, ResNet-50, 2048-d; Boudiaf et al., ECCV 2020; "
                 "ours: mean ± sample standard deviation over seeds):\n" + comparison)
    warnings = comparability_warnings(records)
    if warnings:
        text += "\n\n" + "\n".join(warnings)
    return text, headers, rows
