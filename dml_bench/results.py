"""Gather finished runs into one table: the overrides that differ between runs, then the metrics."""

import csv
import json
import re
from pathlib import Path

import yaml

from dml_bench.engine.tables import markdown_table
from dml_bench.evaluation.metric_names import MAP_AT_R, NUM_QUERIES, R_PRECISION

_RECALL = re.compile(r"recall@(\d+)$")


def find_runs(paths: list[str | Path]) -> list[Path]:
    """Every run folder (one holding ``.hydra/config.yaml``) under the given folders."""
    runs = set()
    for path in map(Path, paths):
        runs.update(config.parent.parent for config in path.rglob(".hydra/config.yaml"))
    return sorted(runs)


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
    """The last ERROR line of the run's log, or a note that the run never finished."""
    for log_file in sorted(run_dir.glob("*.log")):
        errors = [line for line in log_file.read_text(errors="replace").splitlines() if "[ERROR]" in line]
        if errors:
            return errors[-1].split("[ERROR] - ", 1)[-1].strip()
    return "no metrics.json (still running, killed, or crashed)"


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


def collect(paths: list[str | Path]) -> tuple[str, list[str], list[list]]:
    records = [read_run(run) for run in find_runs(paths)]
    if not records:
        raise FileNotFoundError(f"no run folders (with .hydra/config.yaml) under {', '.join(map(str, paths))}")
    headers, rows = results_table(records)
    return markdown_table(headers, rows), headers, rows
