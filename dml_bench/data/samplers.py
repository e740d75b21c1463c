"""Samplers of training indices, deterministic under a seed and shardable across DDP ranks.

Each yields the ``(index, sample_seed)`` pairs of one epoch, batch after batch; with
``num_replicas > 1`` every global batch of ``batch_size`` is cut into equal per-rank slices, so all
ranks together see exactly the batches a single process would. ``set_epoch`` reseeds (seed +
epoch), as DistributedSampler does, and can skip the batches a resumed run has already trained on.

``sample_seed`` seeds that sample's random transform (``loaders.SeededSamples``): augmentations
then depend only on (seed, epoch, position in the global epoch), never on the number of DataLoader
workers, the point a run was resumed from, or the number of ranks. PML's MPerClassSampler draws
from numpy's global RNG instead; ours replaces it.
"""

import inspect
import math
from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable

import torch
from torch.utils.data import Sampler

from dml_bench.runtime.errors import UserError


class TooFewSamples(ValueError):
    """The labels cannot fill one batch of the size asked for; ``largest`` is the largest batch
    size (divisible as the sampler needs) that they can fill, 0 if none."""

    def __init__(self, message: str, largest: int):
        super().__init__(message)
        self.largest = largest


@runtime_checkable
class ResumableSampler(Protocol):
    """The trainer's resume contract: ``set_epoch(epoch, start_batch)`` before each epoch makes the
    sampler yield epoch ``epoch``'s batches from batch ``start_batch`` on, exactly as an
    uninterrupted run would have received them. Any other sampler works too (torch's
    DistributedSampler gets ``set_epoch(epoch)``), but a run can then resume only at an epoch's end.
    """

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None: ...


def supports_mid_epoch_resume(sampler) -> bool:
    return isinstance(sampler, ResumableSampler) and "start_batch" in inspect.signature(sampler.set_epoch).parameters


def start_epoch(sampler, epoch: int, start_batch: int = 0) -> None:
    """Tell ``sampler`` (any sampler, or None) that epoch ``epoch`` starts at batch ``start_batch``."""
    if supports_mid_epoch_resume(sampler):
        sampler.set_epoch(epoch, start_batch=start_batch)
        return
    if start_batch:
        raise UserError(f"This checkpoint was written in the middle of epoch {epoch}, but the sampler "
                        f"{type(sampler).__name__} cannot start an epoch part-way: resume with the run's own "
                        "sampler, or from a checkpoint written at the end of an epoch.")
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)


class _EpochSampler(Sampler[int]):
    def __init__(self, labels: Sequence[int], batch_size: int, seed: int, num_replicas: int, rank: int):
        if batch_size % num_replicas:
            raise ValueError(f"batch_size {batch_size} is not divisible by {num_replicas} ranks")
        self.labels = torch.as_tensor(list(labels))
        self.batch_size = batch_size
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Draw epoch ``epoch``'s batches and yield them from batch ``start_batch`` on."""
        self.epoch, self.start_batch = epoch, start_batch

    @property
    def num_batches(self) -> int:
        raise NotImplementedError

    def __len__(self) -> int:
        return max(0, self.num_batches - self.start_batch) * self.batch_size // self.num_replicas

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        batches = self.global_batches(generator).view(self.num_batches, self.batch_size)
        # Drawn after the batches, so the order of indices does not depend on them.
        seeds = torch.randint(2**31, batches.shape, generator=generator)
        per_rank = self.batch_size // self.num_replicas
        own = slice(self.rank * per_rank, (self.rank + 1) * per_rank)
        indices, seeds = (t[self.start_batch:, own].reshape(-1).tolist() for t in (batches, seeds))
        return zip(indices, seeds)

    def global_batches(self, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError


class UniformSampler(_EpochSampler):
    """Uniform random batches without replacement (the paper's); the last partial batch dropped."""

    def __init__(self, labels, batch_size: int, seed: int = 0, num_replicas: int = 1, rank: int = 0):
        super().__init__(labels, batch_size, seed, num_replicas, rank)
        if len(self.labels) < batch_size:
            raise TooFewSamples(f"a batch of {batch_size} needs {batch_size} distinct images",
                                len(self.labels) // num_replicas * num_replicas)

    @property
    def num_batches(self) -> int:
        return len(self.labels) // self.batch_size

    def global_batches(self, generator):
        order = torch.randperm(len(self.labels), generator=generator)
        return order[: self.num_batches * self.batch_size]


PER_EPOCH = ("images", "classes")  # what an epoch of MPerClassSampler covers


class MPerClassSampler(_EpochSampler):
    """Batches of ``batch_size // m`` distinct classes with ``m`` images each.

    ``per_epoch="images"``: an epoch has ``len(labels) // batch_size`` batches (as many as the
    uniform sampler), so both samplers see the same number of images per epoch; each batch draws
    its classes anew. ``per_epoch="classes"``: an epoch visits every class once, in a random
    order, ``classes * m // batch_size`` batches (the classes left over dropped), as the
    UniqueClassSampler of Ermolov et al.'s code: on CUB with m = 9 and batches of 900, one batch.
    Classes with fewer than ``m`` images are sampled with replacement within the class.
    """

    def __init__(self, labels, batch_size: int, m: int = 4, seed: int = 0, num_replicas: int = 1, rank: int = 0,
                 per_epoch: str = "images"):
        super().__init__(labels, batch_size, seed, num_replicas, rank)
        if per_epoch not in PER_EPOCH:
            raise UserError(f"sampler.per_epoch={per_epoch} must be one of {', '.join(PER_EPOCH)}.")
        self.per_epoch = per_epoch
        if batch_size % m:
            step = math.lcm(m, num_replicas)
            raise UserError(f"trainer.batch_size={batch_size} must be a multiple of sampler.m={m} (sampler=m_per_class "
                            f"fills each batch with batch_size / m classes of m images), e.g. "
                            f"trainer.batch_size={max(step, batch_size // step * step)}.")
        self.m = m
        self.classes_per_batch = batch_size // m
        self.class_members = [
            torch.nonzero(self.labels == c).flatten() for c in torch.unique(self.labels)
        ]
        if len(self.class_members) < self.classes_per_batch:
            step = math.lcm(m, num_replicas)
            raise TooFewSamples(
                f"a batch of {batch_size} needs {self.classes_per_batch} classes (batch_size / sampler.m, "
                f"with m={m} images each)",
                len(self.class_members) * m // step * step)

    @property
    def num_batches(self) -> int:
        if self.per_epoch == "classes":
            return len(self.class_members) // self.classes_per_batch
        return max(1, len(self.labels) // self.batch_size)

    def global_batches(self, generator):
        picks = []
        if self.per_epoch == "classes":
            order = torch.randperm(len(self.class_members), generator=generator)
            picks = [self._draw(c, generator) for c in order[: self.num_batches * self.classes_per_batch].tolist()]
        else:  # each batch's classes drawn just before its images
            for _ in range(self.num_batches):
                classes = torch.randperm(len(self.class_members), generator=generator)[: self.classes_per_batch]
                picks += [self._draw(c, generator) for c in classes.tolist()]
        return torch.cat(picks)

    def _draw(self, c: int, generator) -> torch.Tensor:
        """``m`` images of class ``c``: distinct when it has that many."""
        members = self.class_members[c]
        if len(members) >= self.m:
            return members[torch.randperm(len(members), generator=generator)[: self.m]]
        return members[torch.randint(len(members), (self.m,), generator=generator)]
