#!/usr/bin/env python
"""Plot each configuration's mean test metric with its 95% confidence interval (Student t over its
seeds or folds, as collect_results.py computes it), one bar per configuration and one panel per
metric. Writes a PNG (default: comparison.png in the first folder).

    python scripts/plot_comparison.py DIRS... [--by loss] [--metrics map@r,recall@1] [--out FILE.png]
"""

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from dml_bench.comparison.aggregate import aggregate  # noqa: E402
from dml_bench.comparison.runs import read_runs  # noqa: E402
from dml_bench.evaluation.metric_names import MAP_AT_R, recall_key  # noqa: E402

DEFAULT_METRICS = [MAP_AT_R, recall_key(1)]


def bars(paths: list[Path], by: list[str] | None, metrics: list[str]) -> tuple[list[str], dict[str, list]]:
    """Labels of the configurations with completed runs, and per metric their (mean, CI half-width)."""
    _, _, groups = aggregate(read_runs(paths, by))
    groups = [g for g in groups if g["runs"]]
    labels = [" ".join(map(str, g["config"].values())) or "all runs" for g in groups]
    return labels, {m: [(g["stats"].get(m, (None, None))[0], g["ci"].get(m)) for g in groups] for m in metrics}


def plot(labels: list[str], values: dict[str, list], out: Path) -> None:
    width = max(3.5, 1.0 + 0.7 * len(labels))
    fig, axes = plt.subplots(1, len(values), figsize=(width * len(values), 4.5), squeeze=False)
    for ax, (metric, points) in zip(axes[0], values.items()):
        means = [mean for mean, _ in points]
        errors = [ci or 0.0 for _, ci in points]  # no CI for a single run
        ax.bar(range(len(labels)), means, yerr=errors, capsize=4, color="tab:blue", alpha=0.8)
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        ax.set(title=metric, ylabel="test split: mean and 95% CI")
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="sweep or run folders (searched recursively)")
    parser.add_argument("--by", type=lambda text: text.split(","),
                        help="group runs by these overrides only (as collect_results.py --by)")
    parser.add_argument("--metrics", type=lambda text: text.split(","), default=DEFAULT_METRICS,
                        help=f"metrics to plot, one panel each (default {','.join(DEFAULT_METRICS)})")
    parser.add_argument("--out", type=Path, help="PNG to write (default: comparison.png in the first folder)")
    args = parser.parse_args(argv)
    try:
        labels, values = bars(args.paths, args.by, args.metrics)
    except FileNotFoundError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 1
    missing = [m for m, points in values.items() if any(mean is None for mean, _ in points)]
    if not labels or missing:
        print(f"Error: no completed runs with {', '.join(missing or args.metrics)} under "
              f"{', '.join(map(str, args.paths))}", file=sys.stderr)
        return 1
    out = args.out or args.paths[0] / "comparison.png"
    plot(labels, values, out)
    print(f"plot: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
