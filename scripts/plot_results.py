#!/usr/bin/env python
"""Plot a sweep: Recall@K of each run's best epoch, and the MI terms over the trained epochs, one
line per loss (plus its miner). Writes a PNG (default: results.png in the sweep folder).

Epoch 0 is left out of the MI panels: an untrained network maps every image to nearly one point,
so its entropy estimate lies hundreds of units below the trained epochs' and would flatten them.

    python scripts/plot_results.py outputs/multirun/quickstart-20261128-120000 [--out FILE.png]
"""

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import yaml  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from dml_bench.comparison.runs import find_runs, read_run  # noqa: E402
from dml_bench.evaluation.metric_names import recall_key  # noqa: E402
from dml_bench.evaluation.mi_terms import ENTROPY, MI_PROXY, TIGHTNESS  # noqa: E402
from dml_bench.runtime.files import read_jsonl  # noqa: E402

MI_PANELS = ((TIGHTNESS, "tightness ~ H(Z|Y)"), (ENTROPY, "entropy ~ H(Z)"),
             (MI_PROXY, "entropy - tightness ~ I(Z;Y)"))


def run_label(run_dir: Path) -> str:
    """``loss`` or ``loss + miner miner``, from the config group choices Hydra recorded."""
    hydra = yaml.safe_load((run_dir / ".hydra" / "hydra.yaml").read_text())
    choices = hydra["hydra"]["runtime"]["choices"]
    miner = choices.get("miner")
    return choices["loss"] if miner in (None, "none") else f"{choices['loss']} + {miner} miner"


def load_runs(sweep_dir: Path) -> list[dict]:
    """Completed runs under ``sweep_dir``: label, recall@K of the best epoch, MI terms per epoch."""
    runs = []
    for run_dir in find_runs([sweep_dir]):
        record = read_run(run_dir)
        if record["status"] != "completed":
            print(f"skipped {run_dir}: {record['status']}", file=sys.stderr)
            continue
        config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
        ks = config["evaluation"]["recall_ks"]
        history = [line for line in read_jsonl(run_dir / "history.jsonl")
                   if "mi" in line and line["epoch"] > 0]
        runs.append({"label": run_label(run_dir), "run": run_dir.name, "ks": ks,
                     "recalls": [record["metrics"][recall_key(k)] for k in ks],
                     "epochs": [line["epoch"] for line in history],
                     "mi": {key: [line["mi"][key] for line in history] for key, _ in MI_PANELS}})
    labels = [run["label"] for run in runs]
    for run in runs:
        if labels.count(run["label"]) > 1:
            run["label"] += f" ({run['run']})"
    return runs


def plot(runs: list[dict], out: Path) -> None:
    with_mi = any(run["epochs"] for run in runs)
    fig, axes = plt.subplots(1, 4 if with_mi else 1, figsize=(20 if with_mi else 6, 4.5), squeeze=False)
    recall_ax, *mi_axes = axes[0]
    for run in runs:
        recall_ax.plot(run["ks"], run["recalls"], marker="o", label=run["label"])
    recall_ax.set_xscale("log", base=2)
    recall_ax.set(xlabel="K", ylabel="Recall@K", title="Recall@K (best epoch)")
    recall_ax.set_xticks(runs[0]["ks"], [str(k) for k in runs[0]["ks"]])
    recall_ax.grid(alpha=0.3)
    for ax, (key, title) in zip(mi_axes, MI_PANELS):
        for run in runs:
            ax.plot(run["epochs"], run["mi"][key], marker=".", label=run["label"])
        ax.set(xlabel="epoch", title=f"{title} (test set)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs, not 0.96-1.04 for a 1-epoch run
        ax.grid(alpha=0.3)
    recall_ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dir", type=Path, help="sweep folder (searched recursively for runs)")
    parser.add_argument("--out", type=Path, help="PNG to write (default: SWEEP_DIR/results.png)")
    args = parser.parse_args(argv)
    runs = load_runs(args.sweep_dir)
    if not runs:
        print(f"Error: no completed runs under {args.sweep_dir}", file=sys.stderr)
        return 1
    out = args.out or args.sweep_dir / "results.png"
    plot(runs, out)
    print(f"plot: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
