"""dml_bench: reproducible deep-metric-learning benchmarks."""

__version__ = "0.1.0"
