"""Gather finished runs into tables: the overrides that differ between runs, then the metrics.

By default runs that differ only in ``seed`` form one row (mean ± std and the number of runs);
runs of a paper experiment are also set against the paper's published Recall@K.
"""

import csv
import json
import re
import statistics
from pathlib import Path

import yaml

from dml_bench.engine.run_files import read_jsonl
from dml_bench.engine.tables import markdown_table
from dml_bench.evaluation.metric_names import MAP_AT_R, NUM_QUERIES, R_PRECISION, recall_key

_RECALL = re.compile(r"recall@(\d+)$")
SEED = "seed"

# The paper's cross-entropy Recall@K in % (ResNet-50, 2048-d), by the experiment reproducing it;
# source: docs/reference/recipe.md.
PAPER_RECALL = {
    "paper_cub": {1: 69.2, 2: 79.2, 4: 86.9, 8: 91.6, 16: 95.0, 32: 97.3},
    "paper_cars": {1: 89.3, 2: 93.9, 4: 96.6, 8: 98.4, 16: 99.3, 32: 99.7},
    "paper_sop": {1: 81.1, 10: 91.7, 100: 96.3, 1000: 98.8},
    "paper_inshop": {1: 90.6, 10: 98.0, 20: 98.6, 30: 98.9, 40: 99.1, 50: 99.2},
}


def natural_key(path: Path) -> list:
    """Sort key under which multirun job folders 2 and 10 come in that order."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def find_runs(paths: list[str | Path]) -> list[Path]:
    """Every run folder (one holding ``.hydra/config.yaml``) under the given folders."""
    runs = set()
    for path in map(Path, paths):
        runs.update(config.parent.parent for config in path.rglob(".hydra/config.yaml"))
    return sorted(runs, key=natural_key)


def read_run(run_dir: Path) -> dict:
    overrides = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text()) or []
    record = {"run": str(run_dir), "overrides": dict(o.split("=", 1) for o in overrides if "=" in o)}
    metrics_file = run_dir / "metrics.json"
    if metrics_file.exists():
        summary = json.loads(metrics_file.read_text())
        record.update(status=summary.get("status", "completed"), best_epoch=summary.get("best_epoch"),
                      metrics=summary.get("metrics") or {})
    else:
        record.update(status="failed", best_epoch=None, metrics={}, error=last_error_line(run_dir))
    return record


def last_error_line(run_dir: Path) -> str:
    """The last ERROR line of the run's log (every failure logs one, see
    ``dml_bench.utils.report_user_errors``), or, without one, how far the run got."""
    for log_file in sorted(run_dir.glob("*.log")):
        errors = [line for line in log_file.read_text(errors="replace").splitlines() if "[ERROR]" in line]
        if errors:
            return errors[-1].split("[ERROR] - ", 1)[-1].strip()
    history = read_jsonl(run_dir / "history.jsonl")
    reached = f" after epoch {history[-1]['epoch']}" if history else ""
    return f"no metrics.json: still running, or killed{reached} (continue it with resume={run_dir})"


def metric_columns(records: list[dict]) -> list[str]:
    names = {name for r in records for name in r["metrics"] if name != NUM_QUERIES}
    recalls = sorted((n for n in names if _RECALL.match(n)), key=lambda n: int(_RECALL.match(n).group(1)))
    known = [n for n in (MAP_AT_R, R_PRECISION) if n in names]
    return recalls + known + sorted(names - set(recalls) - set(known))


def varying_overrides(records: list[dict]) -> list[str]:
    keys = sorted({k for r in records for k in r["overrides"]})
    return [k for k in keys if len({r["overrides"].get(k) for r in records}) > 1]


def results_table(records: list[dict]) -> tuple[list[str], list[list]]:
    override_keys = varying_overrides(records)
    metric_names = metric_columns(records)
    headers = ["run", *override_keys, *metric_names, "best_epoch", "status"]
    rows = []
    for r in records:
        status = r["status"] if r["status"] != "failed" else f"failed: {r['error']}"
        rows.append([Path(r["run"]).name, *(r["overrides"].get(k, "") for k in override_keys),
                     *(r["metrics"].get(m) for m in metric_names), r["best_epoch"], status])
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


def aggregate(records: list[dict]) -> tuple[list[str], list[str], list[dict]]:
    """Group runs that differ only in ``seed``: (override keys, metric names, one dict per group
    with its ``config``, ``experiment``, completed ``runs``, ``errors`` and per-metric ``stats``)."""
    keys = [k for k in varying_overrides(records) if k != SEED]
    names = metric_columns(records)
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault(tuple(r["overrides"].get(k, "") for k in keys), []).append(r)
    summaries = []
    for values, runs in groups.items():
        done = [r for r in runs if r["status"] != "failed"]
        summaries.append({
            "config": dict(zip(keys, values)),
            "experiment": runs[0]["overrides"].get("experiment"),
            "runs": len(done),
            "errors": [r["error"] for r in runs if r["status"] == "failed"],
            "stats": {m: mean_std([r["metrics"][m] for r in done if m in r["metrics"]]) for m in names},
        })
    return keys, names, summaries


def _mean_pm_std(mean: float | None, std: float | None, scale: float = 1.0, digits: int = 4) -> str:
    if mean is None:
        return ""
    text = f"{mean * scale:.{digits}f}"
    return text if std is None else f"{text} ± {std * scale:.{digits}f}"


def _status(group: dict) -> str:
    return f"{len(group['errors'])} failed: {group['errors'][0]}" if group["errors"] else "completed"


def aggregate_table(records: list[dict]) -> tuple[str, list[str], list[list]]:
    """Markdown (mean ± std per metric) and CSV (mean and ``<metric>_std`` columns) of the groups."""
    keys, names, groups = aggregate(records)
    text_rows, csv_rows = [], []
    for g in groups:
        config = [g["config"][k] for k in keys]
        text_rows.append([*config, g["runs"], *(_mean_pm_std(*g["stats"][m]) for m in names), _status(g)])
        csv_rows.append([*config, g["runs"], *(v for m in names for v in g["stats"][m]), _status(g)])
    text = markdown_table([*keys, "runs", *names, "status"], text_rows)
    csv_headers = [*keys, "runs", *(h for m in names for h in (m, f"{m}_std")), "status"]
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


def collect(paths: list[str | Path], *, per_run: bool = False) -> tuple[str, list[str], list[list]]:
    """The text to print and the CSV headers and rows: one row per group of seeds (mean ± std),
    or one per run with ``per_run``; then the paper comparison when paper experiments are among
    the runs."""
    records = [read_run(run) for run in find_runs(paths)]
    if not records:
        raise FileNotFoundError(f"no run folders (with .hydra/config.yaml) under {', '.join(map(str, paths))}")
    if per_run:
        headers, rows = results_table(records)
        text = markdown_table(headers, rows)
    else:
        text, headers, rows = aggregate_table(records)
        text += "\n\nmean ± sample standard deviation over the runs that differ only in seed"
    comparison = paper_comparison(records)
    if comparison:
        text += ("\n\nAgainst the paper (cross-entropy, ResNet-50, 2048-d; Boudiaf et al., ECCV 2020):\n"
                 + comparison)
    return text, headers, rows
