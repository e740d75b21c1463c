"""The results table as LaTeX, to paste into a paper: booktabs rules, one row per configuration
(``aggregate.aggregate``: seeds and folds pooled), each metric in % as mean $\\pm$ the 95% CI
half-width, the best mean of each column in bold and, given a ``compare.compare`` result, a
dagger on each value that differs from the baseline at Holm-corrected p < 0.05."""

from pathlib import Path

from dml_bench.comparison.aggregate import CI_CAPTION, aggregate
from dml_bench.comparison.compare import format_p
from dml_bench.evaluation.metric_names import short_name

FIRST_LINE = "% dml_bench results (scripts/collect_results.py)"  # how a table it wrote is recognised
SIGNIFICANCE = 0.05  # Holm-corrected p below this earns a dagger
DIGITS = 1  # decimals of a value in %, as DML papers print Recall@K

_SPECIAL = {c: "\\" + c for c in "&%$#_{}"} | {
    "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"}


def written_here(path: Path) -> bool:
    """Whether ``path`` is missing or a table ``latex_table`` wrote (its first line), which may be
    replaced; a file of other content (a hand-edited table) may not, unless named explicitly."""
    if not path.exists():
        return True
    with open(path, errors="replace") as f:
        return f.readline().startswith(FIRST_LINE)


def escape(text) -> str:
    """``text`` as LaTeX prints it literally (``cross_entropy`` -> ``cross\\_entropy``)."""
    return "".join(_SPECIAL.get(c, c) for c in str(text))


def percent(value: float) -> str:
    return f"{value * 100:.{DIGITS}f}"


def significant_cells(comparison: dict | None) -> set[tuple[tuple, str]]:
    """(configuration values in ``comparison["keys"]`` order, metric) of each comparison row whose
    Holm-corrected p (paired t, or the randomization test for single runs) is below ``SIGNIFICANCE``."""
    if comparison is None:
        return set()
    return {(tuple(row["config"][k] for k in comparison["keys"]), row["metric"]) for row in comparison["rows"]
            if row["p_holm"] is not None and row["p_holm"] < SIGNIFICANCE}


def latex_table(records: list[dict], comparison: dict | None = None) -> str:
    """The table of the groups of ``records`` (``runs.read_runs``), preceded by comment lines
    that say what the numbers are; ``comparison``: ``compare.compare`` of the same records."""
    keys, names, groups = aggregate(records)
    empty = [g for g in groups if not g["runs"]]  # every run failed: nothing to show
    groups = [g for g in groups if g["runs"]]
    marked = significant_cells(comparison)
    shown = {m: [percent(g["stats"][m][0]) if g["stats"][m][0] is not None else None for g in groups]
             for m in names}
    best = {m: max((float(v) for v in values if v is not None), default=None) for m, values in shown.items()}
    if not groups:
        return f"{FIRST_LINE}: no configuration has a completed run.\n"
    splits = sorted({g["selected_on"] for g in groups})
    by_split = len(splits) > 1  # a column only when the groups differ in it
    lines = [f"{FIRST_LINE}, values in %: {CI_CAPTION}.",
             "% Bold: the best mean of each column."]
    if comparison is not None:
        methods = " or ".join(sorted({row["method"] for row in comparison["rows"] if row["p_holm"] is not None}))
        lines.append(f"% $^\\dagger$: differs from {comparison['baseline']} at Holm-corrected p < "
                     f"{format_p(SIGNIFICANCE)} ({methods or 'no test'}; scripts/collect_results.py --compare).")
    if not by_split:
        lines.append(f"% Epochs selected on the {splits[0]} split.")
    failed = sum(len(g["errors"]) for g in groups)
    if failed:
        lines.append(f"% {failed} failed run{'s' * (failed > 1)} left out (see the Markdown table's status column).")
    if empty:
        lines.append("% Not shown, no run completed: " + "; ".join(
            " ".join(f"{k}={g['config'][k]}" for k in keys) for g in empty) + ".")
    lines.append("% Needs \\usepackage{booktabs}.")
    headers = [*map(escape, keys), "runs", *(["selected on"] if by_split else []), *map(escape, map(short_name, names))]
    lines += [f"\\begin{{tabular}}{{{'l' * len(keys)}r{'l' * by_split}{'c' * len(names)}}}", "\\toprule",
              " & ".join(headers) + " \\\\", "\\midrule"]
    for i, g in enumerate(groups):
        config = tuple(g["config"][k] for k in keys)
        cells = [*map(escape, config), str(g["runs"]), *([g["selected_on"]] if by_split else [])]
        for m in names:
            mean, ci = shown[m][i], g["ci"][m]
            if mean is None:
                cells.append("--")
                continue
            text = f"\\textbf{{{mean}}}" if float(mean) == best[m] else mean
            text += " $\\pm$ " + percent(ci) if ci is not None else ""
            cells.append(text + ("$^\\dagger$" if (config, m) in marked else ""))
        lines.append(" & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"
