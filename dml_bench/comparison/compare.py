"""``--compare``: every configuration set against a baseline one, paired over matched
seeds/folds, or, for single runs, by the paired randomization test and the paired bootstrap over the test queries
(``per_query.npz``, see ``evaluation/per_query.py``); p-values Holm-corrected per metric.
"""

import statistics
from pathlib import Path

import numpy as np

from dml_bench.comparison.aggregate import grouped
from dml_bench.comparison.runs import REPLICATES, metric_columns
from dml_bench.comparison.significance import holm, paired_randomization, paired_test
from dml_bench.evaluation.per_query import PER_QUERY_FILE, check_against_metrics, load_per_query
from dml_bench.evaluation.retrieval import QUERY_INDEX
from dml_bench.runtime.errors import UserError
from dml_bench.runtime.tables import markdown_table

RANDOMIZATION = "randomization"  # the method of single runs' rows


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
    t 95% CI and p, Wilcoxon signed-rank p. One run on each side: over the test queries of both
    runs' ``per_query.npz``, the paired randomization test's p and the paired bootstrap's percentile
    95% CI (``bootstrap_samples`` draws each, ``bootstrap_seed``).
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
            rows += _query_rows(config, base_runs[0], other_runs[0], names, bootstrap_samples, bootstrap_seed)
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


def _query_rows(config: dict, base_run: dict, other_run: dict, names: list[str], samples: int,
                seed: int) -> list[dict]:
    (base, base_file), (other, other_file) = (_per_query(run) for run in (base_run, other_run))
    if not np.array_equal(base[QUERY_INDEX], other[QUERY_INDEX]):
        raise ComparisonError(f"{base_file} and {other_file} hold different queries ({len(base[QUERY_INDEX])} and "
                              f"{len(other[QUERY_INDEX])} kept): a paired test over the queries needs both runs "
                              "evaluated on the same test set")
    shared = [m for m in names if m in base and m in other and m != QUERY_INDEX]
    results = paired_randomization({m: other[m].astype(np.float64) - base[m].astype(np.float64) for m in shared},
                                   samples=samples, seed=seed) if shared else {}
    rows = []
    for m in names:
        base_mean, mean = base_run["metrics"].get(m), other_run["metrics"].get(m)
        if m in results:
            rows.append(_row(config, m, RANDOMIZATION, base_mean, mean, results[m]))
        elif base_mean is not None and mean is not None:
            rows.append(_row(config, m, "no test", base_mean, mean, {"n": 1, "difference": mean - base_mean,
                                                                      "notes": ["single runs, no per-query values"]}))
    return rows


def _per_query(run: dict) -> tuple[dict, Path]:
    path = Path(run["run"]) / PER_QUERY_FILE
    if not path.exists():
        raise ComparisonError(f"{path} is missing: a configuration with a single run is compared by a paired "
                              "randomization test over the test queries, from the per-query values every evaluation "
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
    if RANDOMIZATION in methods:
        caption.append(f"Randomization (one run on each side), over the test queries: p of the paired randomization "
                       f"test, {comparison['bootstrap_samples']} random sign flips of the per-query differences "
                       "(scipy.stats.permutation_test, two-sided), and the 95% CI of the paired bootstrap, "
                       f"{comparison['bootstrap_samples']} resamples of the queries (scipy.stats.bootstrap, "
                       f"percentile), both seeded {comparison['bootstrap_seed']}.")
    caption.append(f"Holm: Holm's correction across the {m_p} p" + (f" and the {m_w} Wilcoxon p" if m_w else "")
                   + ". *: the 95% CI excludes zero.")
    caption = " ".join(caption)
    text = f"{caption}\n{markdown_table(headers, text_rows)}"
    if comparison["skipped"]:
        text += "\n\nNot compared, no baseline with their other overrides: " + "; ".join(
            _config_text(c) for c in comparison["skipped"])
    return text, [*keys, *COMPARISON_COLUMNS], csv_rows


def _method_text(row: dict) -> str:
    """``paired t, 5 runs``, ``randomization, 1200 queries``..."""
    one, many = ("query", "queries") if row["method"] == RANDOMIZATION else ("run", "runs")
    return f"{row['method']}, {row['n']} {one if row['n'] == 1 else many}"


def _na(row: dict, column: str) -> str:
    if row["method"] == RANDOMIZATION and column == "p_wilcoxon":
        return "n/a: randomization"
    prefix = "t n/a: " if column == "p" else "Wilcoxon n/a: "
    for note in row["notes"]:
        if note.startswith(prefix):
            return "n/a: " + note[len(prefix):]
    return "n/a: " + row["notes"][0] if row["notes"] else "n/a"
