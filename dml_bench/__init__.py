"""dml_bench: reproducible deep-metric-learning benchmarks."""

from dml_bench import run_folder

__version__ = "0.1.0"

# configs/train.yaml names run folders with these resolvers, whichever entry point composes it.
run_folder.register()
