"""Time exact retrieval evaluation on synthetic embeddings shaped like a benchmark's test set:
ours, PML, a raw FAISS search, and half the matrix product (the floor).

Run from the repository root:

    python scripts/bench_eval.py                        # 60,502 x 512, like SOP's test set
    python scripts/bench_eval.py --case inat --rounds 3 # 136,093 x 128, like iNaturalist's
    python scripts/bench_eval.py --n 5000               # a quick run
    python scripts/bench_eval.py --backends torch faiss --dim 2048

Every method runs in a subprocess of its own, so its peak memory is its own: the growth of the
process's maximum resident set size from after the data is loaded to the end of the method
(this counts torch's and FAISS's native allocations, which tracemalloc would not see). With
``--rounds R`` the methods take turns R times, the order reversed every round, so that a change
of load on a shared machine hits all of them alike; each ratio is then the median of the rounds'.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dml_bench.bench.evaluation import (
    CASES,
    OTHERS,
    SHARED_METRICS,
    TOLERANCE,
    run_faiss,
    run_matmul,
    run_ours,
    run_pml,
    search_depth,
)

FLOOR = "matmul"


def worker(method: str, data: Path, device: str, recall_ks: tuple[int, ...]) -> None:
    """Run one method on saved data; print one JSON line: wall and CPU seconds, peak extra MiB
    and metrics. CPU seconds (all threads) measure the work even when other jobs share the CPUs."""
    import faiss  # noqa: F401  imported before the baseline, like torch, so they do not count
    import torch  # noqa: F401

    import dml_bench.evaluation  # noqa: F401
    import dml_bench.evaluation.heaps  # noqa: F401  numba, which the symmetric search loads on first use

    saved = np.load(data)
    x, labels = saved["x"], saved["labels"]
    name, _, backend = method.partition(":")
    run = {
        "ours": lambda: run_ours(x, labels, backend, device, recall_ks),
        "pml": lambda: run_pml(x, labels, device, recall_ks),
        "faiss": lambda: run_faiss(x, labels, device, recall_ks),
        "matmul": lambda: run_matmul(x, labels, device, recall_ks),
    }[name]
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    metrics = run()
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu_seconds = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    peak_mib = (after.ru_maxrss - before.ru_maxrss) / 1024
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "peak_mib": peak_mib, "metrics": metrics}))


def measure(method: str, data: Path, device: str, case: str) -> dict:
    command = [sys.executable, __file__, "--worker", method, "--data", str(data), "--device", device, "--case", case]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{method} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def label(method: str, depth: int) -> str:
    name, _, backend = method.partition(":")
    return {
        "ours": f"ours, backend={backend}",
        "pml": "PML AccuracyCalculator",
        "faiss": f"raw exact search, k={depth}",
        "matmul": "half the matrix product (floor)",
    }[name]


def run_rounds(methods: list[str], data: Path, device: str, case: str, rounds: int, depth: int) -> dict:
    """Every method once per round, in turn, the order reversed every other round."""
    results = {method: [] for method in methods}
    for round_index in range(rounds):
        for method in methods if round_index % 2 == 0 else methods[::-1]:
            results[method].append(measure(method, data, device, case))
            print(f"round {round_index + 1}: {label(method, depth)}: {results[method][-1]['seconds']:.1f} s "
                  f"(load average {os.getloadavg()[0]:.1f})", flush=True)
    return results


def report(results: dict[str, list[dict]], depth: int) -> bool:
    """Print the table, ratios and value checks; True when ours and PML agree."""
    print(f"\n{'method':<34}{'wall s (best)':>14}{'CPU s (best)':>14}{'peak extra MiB (max)':>22}")
    for method, runs in results.items():
        print(f"{label(method, depth):<34}{min(r['seconds'] for r in runs):>14.1f}"
              f"{min(r['cpu_seconds'] for r in runs):>14.1f}{max(r['peak_mib'] for r in runs):>22.0f}")
    ours = [m for m in results if m.startswith("ours")]
    others = [m for m in results if not m.startswith("ours")]
    for mine in ours:
        print(f"\n{label(mine, depth)}:")
        for metric, value in results[mine][0]["metrics"].items():
            print(f"  {metric:<12} {value:.4f}" if isinstance(value, float) else f"  {metric:<12} {value}")
        for other in others:
            wall, cpu = (statistics.median(m[key] / o[key] for m, o in zip(results[mine], results[other]))
                         for key in ("seconds", "cpu_seconds"))
            print(f"  ours / {label(other, depth)}: wall {wall:.2f}x, CPU {cpu:.2f}x (median of "
                  f"{len(results[mine])} rounds)")
    if "pml" in results and FLOOR in results:
        ceiling = min(r["seconds"] for r in results["pml"]) / min(r["seconds"] for r in results[FLOOR])
        print(f"\nPML / half the matrix product: {ceiling:.2f}x, the most an exact evaluator can gain over PML here")
    agree = True
    if "pml" in results:
        for mine in ours:
            for key, _ in SHARED_METRICS:
                diff = abs(results[mine][0]["metrics"][key] - results["pml"][0]["metrics"][key])
                agree &= diff < TOLERANCE
                print(f"{key:<12} {label(mine, depth)} vs PML: |diff| = {diff:.1e}")
        print("values agree" if agree else f"VALUES DIFFER by {TOLERANCE} or more")
    return agree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=sorted(CASES), default="sop",
                        help="sop: 60,502 x 512, classes of 2-12; inat: 136,093 x 128, 2,452 long-tailed classes")
    parser.add_argument("--n", type=int, help="number of embeddings (default: the case's)")
    parser.add_argument("--dim", type=int, help="embedding size (default: the case's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=1, help="times each method runs, interleaved")
    parser.add_argument("--backends", nargs="+", default=["auto"], help="our backends to time")
    parser.add_argument("--skip", nargs="*", default=None, choices=OTHERS,
                        help="methods left out (default: none for sop, pml for inat)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    case = CASES[args.case]
    if args.worker:
        worker(args.worker, args.data, args.device, case.recall_ks)
        return

    n, dim = args.n or case.n, args.dim or case.dim
    skip = args.skip if args.skip is not None else (["pml"] if args.case == "inat" else [])
    x, labels = case.data(n, dim, args.seed)
    depth = search_depth(labels, case.recall_ks)
    print(f"{n} embeddings x {dim} ({args.case}), {labels.max() + 1} classes, largest {np.bincount(labels).max()}, "
          f"Recall@{','.join(map(str, case.recall_ks))}, device {args.device}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f} at start")
    methods = [f"ours:{b}" for b in args.backends] + [m for m in OTHERS if m not in skip]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data.npz"
        np.savez(data, x=x, labels=labels)
        results = run_rounds(methods, data, args.device, args.case, args.rounds, depth)
    print(f"load average {os.getloadavg()[0]:.1f} at end")
    if not report(results, depth):
        sys.exit(1)


if __name__ == "__main__":
    main()
