"""DataLoaders with settings that default sensibly from the machine, seeded per worker."""

import os
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_num_workers() -> int:
    """One core is left for the training loop; at most 16 workers per process.

    A worker decodes and augments about 250-600 CUB-sized images/s (README, Performance), while a
    GPU training ResNet-50 can take thousands per second, so large machines need many workers.
    """
    return max(0, min(16, available_cpus() - 1))


def resolve_num_workers(num_workers) -> int:
    return default_num_workers() if num_workers in (None, "auto") else int(num_workers)


def seed_worker(worker_id: int) -> None:
    """Seed Python and numpy in each worker from torch's per-worker seed (itself from the loader)."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    sampler: Sampler | None = None,
    num_workers="auto",
    pin_memory: bool = False,
    seed: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    workers = resolve_num_workers(num_workers)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        num_workers=workers,
        pin_memory=pin_memory,
        drop_last=drop_last,
        persistent_workers=workers > 0,
        # Batches each worker prepares ahead: at least 4 in flight in all, to absorb slow images.
        prefetch_factor=max(2, -(-4 // workers)) if workers > 0 else None,
        worker_init_fn=seed_worker,
        generator=torch.Generator().manual_seed(seed),
    )
