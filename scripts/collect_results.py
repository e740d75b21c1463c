#!/usr/bin/env python
"""Print a Markdown table of runs (seeds aggregated: mean ± 95% CI, count), write it as CSV and
as a LaTeX table for a paper.

    python scripts/collect_results.py outputs/multirun/2026-11-28/12-00-00 [MORE_DIRS...] [--csv FILE] [--per-run]
        [--latex FILE] [--by KEY[,KEY...]]
        [--compare KEY=VALUE [--comparison-csv FILE] [--bootstrap-samples N] [--bootstrap-seed S]] [--concatenated]

The LaTeX table (results.tex beside the CSV, or --latex FILE; a results.tex that the script did not
write, such as a hand-edited table, is never replaced unless --latex names it) has one row per configuration, values
in %, the best of each column in bold and, with --compare, a dagger where Holm-corrected p < 0.05.

Runs of experiment=paper_* are also compared with the paper's Recall@K. With --compare (e.g.
--compare loss=cross_entropy), every other configuration is set against that baseline: the
difference of each metric over runs matched by seed (and protocol.fold), its paired t 95% CI,
paired t and Wilcoxon p-values with Holm's correction; a configuration with a single run is
compared over the test queries (per_query.npz in both run folders): the paired randomization test's p
and the paired bootstrap's interval.
With --concatenated, the folds of each protocol=cross_validation configuration are also
evaluated together: each fold's best.pt embeds the test split, the embeddings are concatenated
and evaluated once (dml_bench/comparison/concatenated.py); written to concatenated.csv beside the results CSV.
With --by (e.g. --by loss), runs are grouped and compared by those overrides alone, the others
ignored: the winners of equal-budget searches differ in each tuned hyperparameter (docs/comparisons.md).
"""

import argparse
import sys
from pathlib import Path

from dml_bench.comparison.aggregate import collect, write_csv
from dml_bench.comparison.compare import compare, comparison_table
from dml_bench.comparison.concatenated import concatenated_table
from dml_bench.comparison.latex import FIRST_LINE, latex_table, written_here
from dml_bench.comparison.runs import read_runs
from dml_bench.runtime.errors import UserError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", help="sweep or run folders (searched recursively)")
    parser.add_argument("--csv", type=Path, help="CSV file to write (default: results.csv in the first folder)")
    parser.add_argument("--per-run", action="store_true", help="one row per run instead of per group of seeds")
    parser.add_argument("--latex", type=Path,
                        help="LaTeX table to write (default: results.tex beside the CSV)")
    parser.add_argument("--by", metavar="KEY[,KEY...]", type=lambda text: text.split(","),
                        help="group (and --compare) runs by these overrides only, e.g. --by loss for the "
                             "winners of equal-budget searches, whose tuned hyperparameters differ")
    parser.add_argument("--compare", metavar="KEY=VALUE",
                        help="baseline configuration to set every other against, e.g. loss=cross_entropy")
    parser.add_argument("--comparison-csv", type=Path,
                        help="CSV of the comparison (default: comparison.csv beside the results CSV)")
    parser.add_argument("--bootstrap-samples", type=int, default=10000,
                        help="when single runs are compared over the test queries: random sign flips of the "
                             "randomization test and resamples of the bootstrap interval (default 10000)")
    parser.add_argument("--bootstrap-seed", type=int, default=0, help="seed of those draws (default 0)")
    parser.add_argument("--concatenated", action="store_true",
                        help="also evaluate the concatenated fold models of each cross-validated configuration")
    parser.add_argument("--trust-target", action="append", default=[], metavar="NAME[,NAME...]",
                        help="with --concatenated: a _target_ of the checkpoints' configs to accept although "
                             "configs/ does not name it")
    args = parser.parse_args(argv)
    if args.bootstrap_samples < 1:
        parser.error("--bootstrap-samples must be positive")
    try:
        records = read_runs(args.paths, args.by)
        table, headers, rows = collect(records, per_run=args.per_run)
        comparison = compare(records, args.compare, bootstrap_samples=args.bootstrap_samples,
                             bootstrap_seed=args.bootstrap_seed) if args.compare else None
        latex = latex_table(records, comparison)
        if args.concatenated:
            concatenated, concatenated_headers, concatenated_rows = concatenated_table(
                args.paths, [name for names in args.trust_target for name in names.split(",")])
    except (FileNotFoundError, UserError) as error:
        print(f"Error: {error}", file=sys.stderr)
        return 1
    csv_path = args.csv or Path(args.paths[0]) / "results.csv"
    latex_path = args.latex or csv_path.with_name("results.tex")
    if args.latex is None and not written_here(latex_path):
        print(f"Error: {latex_path} exists and was not written by collect_results.py (its first line is not "
              f"'{FIRST_LINE}'), so it is left as it is and nothing was written. Give --latex FILE to write the "
              "LaTeX table elsewhere, or --latex with that file's name to replace it.", file=sys.stderr)
        return 1
    write_csv(csv_path, headers, rows)
    latex_path.write_text(latex)
    print(table)
    print(f"\nCSV: {csv_path}\nLaTeX: {latex_path}")
    if comparison is not None:
        comparison_text, comparison_headers, comparison_rows = comparison_table(comparison)
        comparison_path = args.comparison_csv or csv_path.with_name("comparison.csv")
        write_csv(comparison_path, comparison_headers, comparison_rows)
        print(f"\n{comparison_text}")
        print(f"\nCSV: {comparison_path}")
    if args.concatenated:
        concatenated_path = csv_path.with_name("concatenated.csv")
        write_csv(concatenated_path, concatenated_headers, concatenated_rows)
        print(f"\n{concatenated}\n\nCSV: {concatenated_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
