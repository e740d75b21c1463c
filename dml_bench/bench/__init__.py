"""Benchmark workloads and timing: the code the scripts/bench_*.py command lines run, importable
so that tests run it on tiny settings. The scripts themselves only parse arguments and print."""
