"""Gather finished runs into tables: the overrides that differ between runs, then the metrics.

By default runs that differ only in ``seed`` (or ``protocol.fold``) form one row: the mean and
the half-width of its 95% Student t confidence interval, and the number of runs; runs of a paper
experiment are also set against the paper's published Recall@K. ``compare`` sets every
configuration against a baseline one: paired over matched seeds/folds, or, for single runs, by
a paired bootstrap over the test queries (``per_query.npz``, see ``evaluation/per_query.py``).
"""

import csv
import json
import os
import re
import statistics
from pathlib import Path

import numpy as np
import yaml

from dml_bench.data.benchmarks import SPECS
from dml_bench.engine.audit import compared_fields
from dml_bench.errors import UserError
from dml_bench.evaluation.metric_names import MAP_AT_R, NUM_QUERIES, R_PRECISION, recall_key
from dml_bench.evaluation.per_query import PER_QUERY_FILE, check_against_metrics, load_per_query
from dml_bench.evaluation.retrieval import QUERY_INDEX
from dml_bench.files import read_jsonl
from dml_bench.significance import holm, paired_bootstrap, paired_test, t_half_width
from dml_bench.tables import markdown_table

_RECALL = re.compile(r"recall@(\d+)$")
SEED = "seed"
FOLD = "protocol.fold"
REPLICATES = (SEED, FOLD)  # runs differing only in these are repeats of one configuration
CI_CAPTION = ("mean ± 95% CI half-width (Student t, n - 1 degrees of freedom, n = runs; no CI for one run) "
              "over the runs that differ only in seed or protocol.fold")

# The paper's cross-entropy Recall@K in % (ResNet-50, 2048-d), by the experiment reproducing it:
# each benchmark's spec holds its own (dml_bench.data.benchmarks; source: docs/reference/recipe.md).
PAPER_RECALL = {spec.experiment: dict(spec.paper_recall) for spec in SPECS}


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
    line on the ERROR line: see ``dml_bench.utils.report_user_errors``), cut to ``ERROR_WIDTH``;
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


class ComparisonError(UserError):
    """A ``--compare`` that cannot be made: no such baseline, runs without a counterpart..."""


def _replicate(run: dict) -> tuple:
    return tuple(run["overrides"].get(k) for k in REPLICATES)


def _replicate_text(replicate: tuple) -> str:
    shown = [f"{k}={v}" for k, v in zip(REPLICATES, replicate) if v is not None]
    return " ".join(shown) or "(no seed override)"


def _config_text(config: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in config.items())


def parse_baseline(baseline: str) -> tuple[str, str]:
    key, sep, value = baseline.partition("=")
    if not sep or not key:
        raise ComparisonError(f"--compare takes KEY=VALUE, an override of the baseline runs (loss=cross_entropy); "
                              f"got {baseline!r}")
    return key, value


def compare(records: list[dict], baseline: str, *, bootstrap_samples: int = 10000, bootstrap_seed: int = 0) -> dict:
    """Set every configuration against the baseline one (``KEY=VALUE``, e.g. ``loss=cross_entropy``)
    that has its other overrides: per metric, the difference (configuration - baseline).

    Runs are matched by ``seed`` and ``protocol.fold``; over n >= 2 matched pairs: paired Student
    t 95% CI and p, Wilcoxon signed-rank p. One run on each side: paired bootstrap over the test
    queries from both runs' ``per_query.npz`` (``bootstrap_samples`` draws, ``bootstrap_seed``).
    Holm's correction runs over all rows (configurations x metrics), separately for ``p`` and
    ``p_wilcoxon``. Returns {"baseline", "keys" (the overrides naming a configuration),
    "rows" (dicts), "skipped" (configurations without a baseline), "bootstrap_samples",
    "bootstrap_seed"}. Raises ComparisonError for a baseline matching no runs and for runs
    without a counterpart (failed runs count as missing).
    """
    key, value = parse_baseline(baseline)
    keys, groups = grouped(records)
    if key not in keys:
        varying = ", ".join(keys) or "none"
        raise ComparisonError(f"--compare {baseline}: {key} does not vary between these runs, so there is nothing "
                              f"to set against it (overrides that vary, seed and fold aside: {varying})")
    position = keys.index(key)
    rest = lambda config: config[:position] + config[position + 1 :]  # noqa: E731
    baselines = {rest(config): runs for config, runs in groups.items() if config[position] == value}
    if not baselines:
        values = sorted({config[position] for config in groups})
        raise ComparisonError(f"--compare {baseline}: no runs with {key}={value}; {key} takes the values "
                              f"{', '.join(values)}")
    names = metric_columns(records)
    pairs, skipped, unmatched = [], [], []
    for config, runs in groups.items():
        if config[position] == value:
            continue
        if rest(config) not in baselines:
            skipped.append(dict(zip(keys, config)))
            continue
        baseline_config = config[:position] + (value,) + config[position + 1 :]
        other = _by_replicate(dict(zip(keys, config)), runs)
        base = _by_replicate(dict(zip(keys, baseline_config)), baselines[rest(config)])
        label = _config_text(dict(zip(keys, config)))
        unmatched += [f"{label}: {_replicate_text(r)} has no baseline run" for r in other if r not in base]
        unmatched += [f"{label}: baseline {_replicate_text(r)} has no run here" for r in base if r not in other]
        matched = [r for r in other if r in base]
        pairs.append((dict(zip(keys, config)), [base[r] for r in matched], [other[r] for r in matched]))
    if unmatched:
        raise ComparisonError(f"--compare {baseline}: runs are matched by {' and '.join(REPLICATES)} (failed runs "
                              "count as missing); without a counterpart:\n  " + "\n  ".join(unmatched))
    rows = []
    for config, base_runs, other_runs in pairs:
        if len(base_runs) == 1:
            rows += _bootstrap_rows(config, base_runs[0], other_runs[0], names, bootstrap_samples, bootstrap_seed)
        else:
            rows += _paired_rows(config, base_runs, other_runs, names)
    for column in ("p", "p_wilcoxon"):
        for row, adjusted in zip(rows, holm([row[column] for row in rows])):
            row[f"{column}_holm"] = adjusted
    for row in rows:
        row["excludes_zero"] = row["ci_low"] is not None and (row["ci_low"] > 0 or row["ci_high"] < 0)
    return {"baseline": baseline, "keys": keys, "rows": rows, "skipped": skipped,
            "bootstrap_samples": bootstrap_samples, "bootstrap_seed": bootstrap_seed}


def _by_replicate(config: dict, runs: list[dict]) -> dict[tuple, dict]:
    """The completed runs by seed and fold; two of one replicate are an error."""
    found: dict[tuple, dict] = {}
    for run in runs:
        if run["status"] == "failed":
            continue
        replicate = _replicate(run)
        if replicate in found:
            raise ComparisonError(f"two runs of {_config_text(config)} with {_replicate_text(replicate)}: "
                                  f"{found[replicate]['run']} and {run['run']}; collect one of them")
        found[replicate] = run
    return found


def _row(config: dict, metric: str, method: str, base_mean, mean, result: dict) -> dict:
    return {"config": config, "metric": metric, "method": method, "n": result.get("n"), "baseline": base_mean,
            "mean": mean, "difference": result.get("difference"), "ci_low": result.get("ci_low"),
            "ci_high": result.get("ci_high"), "p": result.get("p"), "p_wilcoxon": result.get("p_wilcoxon"),
            "notes": list(result.get("notes", []))}


def _paired_rows(config: dict, base_runs: list[dict], other_runs: list[dict], names: list[str]) -> list[dict]:
    rows = []
    for m in names:
        both = [(b["metrics"][m], o["metrics"][m]) for b, o in zip(base_runs, other_runs)
                if m in b["metrics"] and m in o["metrics"]]
        if not both:
            continue
        base, other = zip(*both)
        result = paired_test(base, other)
        rows.append(_row(config, m, "paired t", statistics.fmean(base), statistics.fmean(other), result))
    return rows


def _bootstrap_rows(config: dict, base_run: dict, other_run: dict, names: list[str], samples: int,
                    seed: int) -> list[dict]:
    (base, base_file), (other, other_file) = (_per_query(run) for run in (base_run, other_run))
    if not np.array_equal(base[QUERY_INDEX], other[QUERY_INDEX]):
        raise ComparisonError(f"{base_file} and {other_file} hold different queries ({len(base[QUERY_INDEX])} and "
                              f"{len(other[QUERY_INDEX])} kept): a paired bootstrap needs both runs evaluated on "
                              "the same test set")
    shared = [m for m in names if m in base and m in other and m != QUERY_INDEX]
    results = paired_bootstrap({m: other[m].astype(np.float64) - base[m].astype(np.float64) for m in shared},
                               samples=samples, seed=seed) if shared else {}
    rows = []
    for m in names:
        base_mean, mean = base_run["metrics"].get(m), other_run["metrics"].get(m)
        if m in results:
            rows.append(_row(config, m, "bootstrap", base_mean, mean, results[m]))
        elif base_mean is not None and mean is not None:
            rows.append(_row(config, m, "no test", base_mean, mean, {"n": 1, "difference": mean - base_mean,
                                                                      "notes": ["single runs, no per-query values"]}))
    return rows


def _per_query(run: dict) -> tuple[dict, Path]:
    path = Path(run["run"]) / PER_QUERY_FILE
    if not path.exists():
        raise ComparisonError(f"{path} is missing: a configuration with a single run is compared by a paired "
                              "bootstrap over the test queries, from the per-query values every evaluation "
                              "writes; re-evaluate the run, or run more seeds")
    values, _ = load_per_query(path)
    disagree = check_against_metrics(values, run["metrics"])
    if disagree:
        raise ComparisonError(f"{path} does not match {Path(run['run']) / 'metrics.json'} "
                              f"({'; '.join(disagree)}): is it from another epoch?")
    return values, path


COMPARISON_COLUMNS = ["metric", "method", "n", "baseline", "mean", "difference", "ci_low", "ci_high", "p", "p_holm",
                      "p_wilcoxon", "p_wilcoxon_holm", "excludes_zero", "notes"]


def format_p(p: float | None) -> str:
    return "" if p is None else f"{p:.3g}"


def format_value(x: float | None) -> str:
    return "" if x is None else f"{x:.4f}"


def comparison_table(comparison: dict) -> tuple[str, list[str], list[list]]:
    """Markdown (caption, table, notes) and CSV headers and rows of ``compare``'s result, with the
    same numbers: the Markdown rounds the CSV's values (differences and means to 4 decimals,
    p-values to 3 significant digits)."""
    keys, rows = comparison["keys"], comparison["rows"]
    text_rows, csv_rows = [], []
    for row in rows:
        config = [row["config"][k] for k in keys]
        csv_rows.append([*config, *(row[c] for c in COMPARISON_COLUMNS[:-2]), int(row["excludes_zero"]),
                         "; ".join(row["notes"])])
        text_rows.append([*config, row["metric"], _method_text(row), format_value(row["baseline"]),
                          format_value(row["mean"]), format_value(row["difference"]),
                          "" if row["ci_low"] is None else f"[{format_value(row['ci_low'])}, "
                                                           f"{format_value(row['ci_high'])}]",
                          *(format_p(row[c]) or _na(row, c.removesuffix("_holm"))
                            for c in ("p", "p_holm", "p_wilcoxon", "p_wilcoxon_holm")),
                          "*" if row["excludes_zero"] else ""])
    headers = [*keys, "metric", "method", "baseline", "mean", "difference", "95% CI", "p", "p (Holm)",
               "Wilcoxon p", "Wilcoxon p (Holm)", "CI excludes 0"]
    methods = {row["method"] for row in rows}
    m_p = sum(row["p"] is not None for row in rows)
    m_w = sum(row["p_wilcoxon"] is not None for row in rows)
    caption = [f"Against {comparison['baseline']}: difference = configuration - baseline, runs matched by "
               f"{' and '.join(REPLICATES)}."]
    if "paired t" in methods:
        caption.append("Paired t: mean difference over the matched runs, its 95% CI (paired Student t) and p "
                       "(scipy.stats.ttest_rel); Wilcoxon: signed-rank p (scipy.stats.wilcoxon).")
    if "bootstrap" in methods:
        caption.append(f"Bootstrap (one run on each side): the test queries resampled "
                       f"{comparison['bootstrap_samples']} times (seed {comparison['bootstrap_seed']}), percentile "
                       "95% CI and two-sided p.")
    caption.append(f"Holm: Holm's correction across the {m_p} p" + (f" and the {m_w} Wilcoxon p" if m_w else "")
                   + ". *: the 95% CI excludes zero.")
    caption = " ".join(caption)
    text = f"{caption}\n{markdown_table(headers, text_rows)}"
    if comparison["skipped"]:
        text += "\n\nNot compared, no baseline with their other overrides: " + "; ".join(
            _config_text(c) for c in comparison["skipped"])
    return text, [*keys, *COMPARISON_COLUMNS], csv_rows


def _method_text(row: dict) -> str:
    """``paired t, 5 runs``, ``bootstrap, 1200 queries``..."""
    one, many = ("query", "queries") if row["method"] == "bootstrap" else ("run", "runs")
    return f"{row['method']}, {row['n']} {one if row['n'] == 1 else many}"


def _na(row: dict, column: str) -> str:
    if row["method"] == "bootstrap" and column == "p_wilcoxon":
        return "n/a: bootstrap"
    prefix = "t n/a: " if column == "p" else "Wilcoxon n/a: "
    for note in row["notes"]:
        if note.startswith(prefix):
            return "n/a: " + note[len(prefix):]
    return "n/a: " + row["notes"][0] if row["notes"] else "n/a"
