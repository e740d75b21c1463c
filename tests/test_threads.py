"""The symmetric search's threads: tasks that share a key never run at once (``run_apart``)."""

import threading
import time
from collections import Counter

import pytest

from dml_bench.evaluation.threads import Threads


def test_run_apart_runs_every_task_never_two_sharing_a_key_at_once():
    """Tasks of overlapping keys, each holding its keys for a moment: every task runs once, no
    key is ever held twice, and other tasks do run at the same time."""
    tasks = [({i % 3, 3 + i % 5}, i) for i in range(40)]
    holders, most_at_once, done = Counter(), [0], []
    lock = threading.Lock()

    def work(part, item):
        keys = tasks[item][0]
        with lock:
            holders.update(keys)
            assert max(holders[key] for key in keys) == 1, f"task {item} shares a key with a running task"
            most_at_once[0] = max(most_at_once[0], sum(holders.values()) // 2)
        time.sleep(0.003)
        with lock:
            holders.subtract(keys)
            done.append(item)

    with Threads(3) as threads:
        threads.run_apart(tasks, work)
    assert sorted(done) == list(range(40))
    assert most_at_once[0] >= 2


def test_run_apart_raises_a_task_error_and_ends():
    """A failing task ends the run with its error; the tasks that waited on its key do not hang."""
    done = []

    def work(part, item):
        if item == 3:
            raise ValueError("task 3")
        done.append(item)

    with Threads(2) as threads, pytest.raises(ValueError, match="task 3"):
        threads.run_apart([({0}, item) for item in range(8)], work)
    assert 3 not in done and set(done) <= set(range(8))
