#!/usr/bin/env python
"""Retrain the winner of an equal-budget search with several seeds, each tested once.

    python scripts/retrain_best.py SWEEP_DIR [--seeds 5] [--out DIR] [--dry-run] [--trust-target NAME] [-- OVERRIDES...]

Reads the best parameters from SWEEP_DIR/optimization_results.yaml and the search's command line
from the best trial's folder, then launches ``python -m dml_bench.train -m`` with that command
line, without search=, with its loss, miner, sampler and protocol, the best parameters and
``seed=1,...,N`` (the search trained with seed 0), each in DIR/SEED (DIR: SWEEP_DIR/retrain by
default); a seed whose run there has finished is not run again, and one whose run started there
but did not finish is continued with ``resume=DIR/SEED``. Overrides
after ``--`` are added or replace the same key's (trainer.epochs=30, hydra/launcher=slurm...). docs/comparisons.md.
A ``_target_`` in the trial's overrides that configs/ does not name is refused unless --trust-target
names it (docs/reliability.md).
"""

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

from dml_bench.comparison.search import retrain_commands
from dml_bench.runtime.errors import UserError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dir", type=Path, help="the hydra.sweep.dir of a search=NAME sweep")
    parser.add_argument("--seeds", type=int, default=5, help="runs of the winner, one per seed (default 5)")
    parser.add_argument("--out", type=Path, help="folder of the retraining multirun (default SWEEP_DIR/retrain)")
    parser.add_argument("--dry-run", action="store_true", help="print the command instead of running it")
    parser.add_argument("--trust-target", action="append", default=[], metavar="NAME[,NAME...]",
                        help="a _target_ of the trial's overrides to accept although configs/ does not name it")
    argv = sys.argv[1:] if argv is None else list(argv)
    split = argv.index("--") if "--" in argv else len(argv)
    args, overrides = parser.parse_args(argv[:split]), argv[split + 1:]
    if args.seeds < 1:
        parser.error("--seeds must be positive")
    try:
        out = args.out or args.sweep_dir / "retrain"
        commands, trial, finished = retrain_commands(args.sweep_dir, args.seeds, out, overrides,
                                                     [n for names in args.trust_target for n in names.split(",")])
    except UserError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 1
    print(f"best trial: {trial}", flush=True)
    if finished:
        print(f"finished, not run again: seed {', '.join(map(str, finished))} ({out}/SEED)", flush=True)
    for command in commands:
        print(shlex.join(command), flush=True)
        if not args.dry_run:
            returncode = subprocess.run(command, check=False).returncode
            if returncode:
                return returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
