"""The symmetric search's threads: a step of its pass (a block's product, the block offered to
the heaps, the heaps sorted) split into shares, one per thread, run at once (``run``); or a list
of tiles, each taken by the next free thread, no two that change one heap at once (``run_apart``).

The product runs as one single-threaded BLAS call per share, not as one multi-threaded call: a
multi-threaded OpenBLAS keeps its threads busy-waiting for a while after each call, and on a
machine with few cores they would hold the cores the compiled block pass needs.
"""

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import threadpoolctl

# A strip of a block's products (float32), made and offered to the heaps by one thread while it
# is still in cache. 4 MiB was the fastest measured on a 2-core EPYC with 2 MiB of L2 per core and
# 32 MiB of L3 (1, 2, 8 and 16 MiB within noise of it; docs/evaluation.md).
STRIP_BYTES = 4 * 2**20


class Threads:
    """``count`` threads, used inside a ``with`` block; numpy's BLAS single-threaded meanwhile."""

    def __init__(self, count):
        self.count = max(1, int(count))
        self._buffers = [np.empty(STRIP_BYTES // 4, np.float32) for _ in range(self.count)]

    def __enter__(self):
        self._limits = threadpoolctl.threadpool_limits(1, user_api="blas")
        self._pool = ThreadPoolExecutor(self.count, thread_name_prefix="dml_bench-search")
        return self

    def __exit__(self, *exc):
        self._pool.shutdown()
        self._limits.restore_original_limits()

    def run(self, step):
        """step(part, parts) for every part at once; returns when all are done (their errors raised)."""
        for _ in self._pool.map(lambda part: step(part, self.count), range(self.count)):
            pass

    def run_apart(self, tasks, work):
        """work(part, item) for each (keys, item) of ``tasks``, every task on one thread, no two
        tasks that share a key at once: a thread takes the first task, in the order given, whose
        keys no other thread holds. No step waits for its slowest thread, as with ``run``."""
        pending, held = list(tasks), set()
        changed = threading.Condition()

        def take():
            with changed:
                while pending:
                    free = next((i for i, (keys, _) in enumerate(pending) if held.isdisjoint(keys)), None)
                    if free is not None:
                        keys, item = pending.pop(free)
                        held.update(keys)
                        return keys, item
                    changed.wait()
                return None

        def worker(part, parts):
            while (task := take()) is not None:
                keys, item = task
                try:
                    work(part, item)
                finally:
                    with changed:
                        held.difference_update(keys)
                        changed.notify_all()

        self.run(worker)

    @staticmethod
    def strips(rows, columns):
        """The strips (slices of ``rows``, a slice) whose products with ``columns`` rows fit a buffer."""
        height = max(1, STRIP_BYTES // (4 * columns))
        return [slice(start, min(start + height, rows.stop)) for start in range(rows.start, rows.stop, height)]

    def product(self, part, rows_i, rows_j):
        """Inner products of rows_i x rows_j (a strip), in the buffer of thread ``part``."""
        inner = self._buffers[part][: len(rows_i) * len(rows_j)].reshape(len(rows_i), len(rows_j))
        return np.matmul(rows_i, rows_j.T, out=inner)


def share(rows, part, parts):
    """Part ``part`` of ``parts`` of the slice ``rows``, as a slice: parts differ by one row at most."""
    count = rows.stop - rows.start
    return slice(rows.start + part * count // parts, rows.start + (part + 1) * count // parts)
