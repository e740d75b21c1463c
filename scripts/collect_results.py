#!/usr/bin/env python
"""Print a Markdown table of runs (seeds aggregated: mean ± std, count) and write it as CSV.

    python scripts/collect_results.py outputs/multirun/2026-11-28/12-00-00 [MORE_DIRS...] [--csv FILE] [--per-run]

Runs of experiment=paper_* are also compared with the paper's Recall@K.
"""

import argparse
import sys
from pathlib import Path

from dml_bench.results import collect, write_csv


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", help="sweep or run folders (searched recursively)")
    parser.add_argument("--csv", type=Path, help="CSV file to write (default: results.csv in the first folder)")
    parser.add_argument("--per-run", action="store_true", help="one row per run instead of per group of seeds")
    args = parser.parse_args(argv)
    try:
        table, headers, rows = collect(args.paths, per_run=args.per_run)
    except FileNotFoundError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 1
    csv_path = args.csv or Path(args.paths[0]) / "results.csv"
    write_csv(csv_path, headers, rows)
    print(table)
    print(f"\nCSV: {csv_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
