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

    A worker decodes and augments about 250-600 CUB-sized images/s (docs/performance.md), while a
    GPU training ResNet-50 can take thousands per second, so large machines need many workers.
    The processes of a distributed run on one machine (torchrun's LOCAL_WORLD_SIZE) share its cores.
    """
    cpus = available_cpus() // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(0, min(16, cpus - 1))


def resolve_num_workers(num_workers) -> int:
    return default_num_workers() if num_workers in (None, "auto") else int(num_workers)


def seed_worker(worker_id: int) -> None:
    """Seed Python and numpy in each worker from torch's per-worker seed (itself from the loader)."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


class SeededSamples(Dataset):
    """The training set read through ``(index, sample_seed)`` keys, as our samplers yield them.

    Each sample's random transform draws from Python's, numpy's and torch's CPU generators seeded
    with its ``sample_seed``; the caller's generator states are restored afterwards, so loading in
    the main process (``num_workers=0``) leaves the training RNG untouched.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        states = random.getstate(), np.random.get_state(), torch.get_rng_state()
        random.seed(seed)
        np.random.seed(seed)
        torch.default_generator.manual_seed(seed)  # not torch.manual_seed: that reseeds CUDA too
        try:
            return self.dataset[index]
        finally:
            random.setstate(states[0])
            np.random.set_state(states[1])
            torch.set_rng_state(states[2])


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
