"""Read finished (and failed) runs from their folders: overrides, status, metrics, audit card.

A run folder is one holding ``.hydra/config.yaml``; ``read_runs`` gives one record (a dict) per
run, which ``aggregate`` and ``compare`` turn into tables.
"""

import json
import os
import re
from pathlib import Path

import yaml

from dml_bench.evaluation.metric_names import MAP_AT_R, NUM_QUERIES, R_PRECISION
from dml_bench.runtime.files import read_jsonl

_RECALL = re.compile(r"recall@(\d+)$")
SEED = "seed"
FOLD = "protocol.fold"
REPLICATES = (SEED, FOLD)  # runs differing only in these are repeats of one configuration


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
    """A run's overrides, status, metrics, audit card (run_info.json, see ``engine.audit``) and
    the split that selected its epoch (metrics.json's ``selected_on``, else the card's, else
    test: runs under protocol=paper select on test; empty for a failed run without either)."""
    overrides = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text()) or []
    record = {"run": str(run_dir), "overrides": dict(o.split("=", 1) for o in overrides if "=" in o)}
    info_file = run_dir / "run_info.json"
    record["audit"] = json.loads(info_file.read_text()).get("audit") if info_file.exists() else None
    metrics_file = run_dir / "metrics.json"
    summary = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
    if summary:
        record.update(status=summary.get("status", "completed"), best_epoch=summary.get("best_epoch"),
                      metrics=summary.get("metrics") or {})
    else:
        record.update(status="failed", best_epoch=None, metrics={}, error=last_error_line(run_dir))
    # runs older than the selected_on field all selected on test; a failed run without a card, on nothing yet
    record["selected_on"] = (summary.get("selected_on") or (record["audit"] or {}).get("selected_on")
                             or ("test" if summary else ""))
    return record


# An ERROR line of dml_bench in a run's log (others, such as submitit's "Submitted job triggered an
# exception", follow it there): "[2026-01-31 12:00:00,000][dml_bench][ERROR] - MESSAGE".
_ERROR_LINE = re.compile(r"\]\[dml_bench[\w.]*\]\[ERROR\] - (.*)")
ERROR_WIDTH = 80  # characters of an error that a status cell shows (the log holds all of it)


def last_error_line(run_dir: Path) -> str:
    """The last error that dml_bench logged in the run's log (every failure logs one, its first
    line on the ERROR line: see ``dml_bench.runtime.entry.report_user_errors``), cut to ``ERROR_WIDTH``;
    or, without one, how far the run got."""
    for log_file in sorted(run_dir.glob("*.log")):
        errors = _ERROR_LINE.findall(log_file.read_text(errors="replace"))
        if errors:
            error = errors[-1].strip()
            return error if len(error) <= ERROR_WIDTH else error[: ERROR_WIDTH - 1].rstrip() + "…"
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


def run_labels(records: list[dict]) -> dict[str, str]:
    """Each run's folder relative to the folder all the runs share (a lone run: its folder's name),
    so that the jobs of two sweeps stay apart (``a/0``, ``b/0``)."""
    runs = [r["run"] for r in records]
    if len(runs) == 1:
        return {runs[0]: Path(runs[0]).name}
    common = os.path.commonpath(runs)
    return {run: os.path.relpath(run, common) for run in runs}


def read_runs(paths: list[str | Path], by: list[str] | None = None) -> list[dict]:
    """The runs under ``paths``. With ``by``, each run keeps only those overrides (and seed and
    fold), so that runs are grouped and compared by them alone: the winners of equal-budget
    searches (docs/comparisons.md) differ in every tuned hyperparameter, but ``by=["loss"]`` sets
    them side by side."""
    missing = [str(path) for path in paths if not Path(path).exists()]
    if missing:
        raise FileNotFoundError(f"{', '.join(missing)}: no such folder")
    records = [read_run(run) for run in find_runs(paths)]
    if not records:
        raise FileNotFoundError(f"no run folders (with .hydra/config.yaml) under {', '.join(map(str, paths))}")
    if by:
        for r in records:
            r["overrides"] = {k: v for k, v in r["overrides"].items() if k in by or k in REPLICATES}
    return records
