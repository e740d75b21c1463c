"""Time exact retrieval evaluation on SOP-sized synthetic embeddings: ours, PML, raw FAISS.

Run from the repository root:

    python scripts/bench_eval.py                  # 60,502 x 512, like SOP's test set
    python scripts/bench_eval.py --n 5000         # a quick run
    python scripts/bench_eval.py --backends torch faiss --dim 2048

Every method runs in a subprocess of its own, so its peak memory is its own: the growth of the
process's maximum resident set size from after the data is loaded to the end of the method
(this counts torch's and FAISS's native allocations, which tracemalloc would not see).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dml_bench.bench.evaluation import (
    FAISS_K,
    OTHERS,
    SHARED_METRICS,
    TOLERANCE,
    run_faiss,
    run_matmul,
    run_ours,
    run_pml,
    synthetic_sop,
)


def worker(method: str, data: Path, device: str) -> None:
    """Run one method on saved data; print one JSON line: wall and CPU seconds, peak extra MiB
    and metrics. CPU seconds (all threads) measure the work even when other jobs share the CPUs."""
    import faiss  # noqa: F401  imported before the baseline, like torch, so they do not count
    import torch  # noqa: F401

    import dml_bench.evaluation  # noqa: F401

    saved = np.load(data)
    x, labels = saved["x"], saved["labels"]
    name, _, backend = method.partition(":")
    run = {
        "ours": lambda: run_ours(x, labels, backend, device),
        "pml": lambda: run_pml(x, labels, device),
        "faiss": lambda: run_faiss(x, labels, device),
        "matmul": lambda: run_matmul(x, labels, device),
    }[name]
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    metrics = run()
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu_seconds = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    peak_mib = (after.ru_maxrss - before.ru_maxrss) / 1024
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu_seconds": cpu_seconds,
                "peak_mib": peak_mib,
                "metrics": metrics,
            }
        )
    )


def measure(method: str, data: Path, device: str) -> dict:
    command = [
        sys.executable,
        __file__,
        "--worker",
        method,
        "--data",
        str(data),
        "--device",
        device,
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{method} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def label(method: str) -> str:
    name, _, backend = method.partition(":")
    return {
        "ours": f"ours, backend={backend}",
        "pml": "PML AccuracyCalculator",
        "faiss": f"raw FAISS IndexFlatIP, k={FAISS_K}",
        "matmul": "half the matrix product (floor)",
    }[name]


def report(results: dict[str, dict]) -> bool:
    """Print the table, ratios and value checks; True when ours and PML agree."""
    print(f"\n{'method':<34}{'wall s':>8}{'CPU s':>8}{'peak extra MiB':>16}")
    for method, result in results.items():
        print(f"{label(method):<34}{result['seconds']:>8.1f}{result['cpu_seconds']:>8.1f}{result['peak_mib']:>16.0f}")
    ours = [m for m in results if m.startswith("ours")]
    others = [m for m in results if not m.startswith("ours")]
    for mine in ours:
        print(f"\n{label(mine)}:")
        for metric, value in results[mine]["metrics"].items():
            print(f"  {metric:<12} {value:.4f}" if isinstance(value, float) else f"  {metric:<12} {value}")
        for other in others:
            wall, cpu = (results[other][key] / results[mine][key] for key in ("seconds", "cpu_seconds"))
            print(f"  {label(other)} / ours: wall {wall:.2f}x, CPU {cpu:.2f}x")
    if "pml" in results and "matmul" in results:
        ceiling = results["pml"]["seconds"] / results["matmul"]["seconds"]
        print(f"\nPML / half the matrix product: {ceiling:.2f}x, the most an exact evaluator can gain over PML here")
    agree = True
    if "pml" in results:
        for mine in ours:
            for key, _ in SHARED_METRICS:
                diff = abs(results[mine]["metrics"][key] - results["pml"]["metrics"][key])
                agree &= diff < TOLERANCE
                print(f"{key:<12} {label(mine)} vs PML: |diff| = {diff:.1e}")
        print("values agree" if agree else f"VALUES DIFFER by {TOLERANCE} or more")
    return agree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=60_502, help="number of embeddings")
    parser.add_argument("--dim", type=int, default=512, help="embedding size (e.g. 2048)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backends", nargs="+", default=["auto"], help="our backends to time")
    parser.add_argument("--skip", nargs="*", default=[], choices=OTHERS)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.data, args.device)
        return

    x, labels = synthetic_sop(args.n, args.dim, args.seed)
    print(
        f"{args.n} embeddings x {args.dim}, {labels.max() + 1} classes, device {args.device}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start"
    )
    methods = [f"ours:{b}" for b in args.backends] + [m for m in OTHERS if m not in args.skip]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data.npz"
        np.savez(data, x=x, labels=labels)
        results = {}
        for method in methods:
            results[method] = measure(method, data, args.device)
            print(f"{label(method)}: {results[method]['seconds']:.1f} s", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at end")
    if not report(results):
        sys.exit(1)


if __name__ == "__main__":
    main()
