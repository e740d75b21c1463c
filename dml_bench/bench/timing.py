"""Throughput measured fairly on a shared machine: candidates take turns, round after round."""

import statistics
import time
from collections.abc import Callable


def interleaved_rates(candidates: dict[str, Callable[[], int]], rounds: int,
                      clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Call every candidate once per round, in turn, so a change of load hits all of them alike.

    The order reverses every round (A B, B A, ...) so no candidate always runs first. Each
    candidate processes some images and returns how many; the result holds its images/s for every
    round. Round 0 is a warm-up and is not returned. With ``clock=time.process_time`` a
    single-threaded CPU candidate is timed by the CPU time it used, which other processes on a
    shared machine barely change (wall time is needed when a GPU does the work).
    """
    rates = {name: [] for name in candidates}
    for round_index in range(rounds + 1):
        order = list(candidates.items())
        for name, run in order if round_index % 2 else order[::-1]:
            start = clock()
            count = run()
            if round_index:
                rates[name].append(count / (clock() - start))
    return rates


def ratio_columns(rates: dict[str, list[float]], baselines: dict[str, str]) -> dict[str, list[str]]:
    """Per candidate: its best images/s, and its speed relative to its baseline, two ways.

    "best" compares the fastest rounds (what an unloaded machine gives); "median" is the median
    over rounds of the per-round ratio (robust to the load drifting). On a busy machine the two
    differ by the noise; on a quiet one they agree.
    """
    columns = {}
    for name, values in rates.items():
        base = rates[baselines[name]]
        per_round = statistics.median(v / b for v, b in zip(values, base))
        columns[name] = [f"{max(values):.1f}", f"{max(values) / max(base):.2f}x", f"{per_round:.2f}x"]
    return columns


RATIO_HEADERS = ["images/s (best round)", "ratio (best rounds)", "ratio (median of rounds)"]
