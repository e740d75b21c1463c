"""A class-disjoint validation split carved out of the training classes (protocol=rigorous)."""

import torch

from dml_bench.data.retrieval_dataset import RetrievalDataset
from dml_bench.errors import UserError


def class_disjoint_split(
    dataset: RetrievalDataset, fraction: float, seed: int, validation_transform=None
) -> tuple[RetrievalDataset, RetrievalDataset]:
    """Split ``dataset`` into (train, validation) with no class in both.

    ``round(fraction * C)`` of its C classes (at least one, and at least one left to train on),
    drawn by a permutation seeded with ``seed``, go to validation with all their images. The
    train part keeps ``dataset.transform``; the validation part gets ``validation_transform``.
    Each part re-indexes its targets to 0..n-1; ``labels`` keep the dataset's class ids.
    """
    classes = dataset.classes
    if not 0 < fraction < 1 or len(classes) < 2:
        raise UserError(f"protocol.validation_fraction={fraction} must be in (0, 1) and the training "
                        f"split needs at least 2 classes to carve a class-disjoint validation split from "
                        f"(it has {len(classes)}).")
    count = min(max(1, round(fraction * len(classes))), len(classes) - 1)
    order = torch.randperm(len(classes), generator=torch.Generator().manual_seed(seed))
    held_out = {classes[i] for i in order[:count].tolist()}

    def part(in_validation: bool, transform) -> RetrievalDataset:
        rows = [(path, label) for path, label in zip(dataset.paths, dataset.labels)
                if (label in held_out) == in_validation]
        paths, labels = zip(*rows)
        return RetrievalDataset(dataset.root, dataset.split, transform, rows=(paths, labels),
                                cache_dir=dataset.cache_dir)

    return part(False, dataset.transform), part(True, validation_transform)
