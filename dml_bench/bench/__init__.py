"""What the benchmark scripts (scripts/bench_*.py) measure, kept importable so tests can run it."""
