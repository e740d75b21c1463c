"""Class-disjoint validation splits carved out of the training classes: a fraction of them
(protocol=rigorous) or one of K folds (protocol=cross_validation)."""

import torch

from dml_bench.data.retrieval_dataset import RetrievalDataset
from dml_bench.runtime.errors import UserError


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
    held_out = [classes[i] for i in _permutation(len(classes), seed)[:count].tolist()]
    return split_by_class(dataset, held_out, validation_transform)


def class_folds(classes: list, folds: int, seed: int) -> list[list]:
    """``classes`` in ``folds`` disjoint folds whose sizes differ by at most one: consecutive
    chunks of a permutation seeded with ``seed``, each sorted."""
    if not isinstance(folds, int) or not 2 <= folds <= len(classes):
        raise UserError(f"protocol.folds={folds} must be an integer from 2 to the number of training "
                        f"classes ({len(classes)}): each fold holds at least one class.")
    order = _permutation(len(classes), seed)
    return [sorted(classes[i] for i in chunk.tolist()) for chunk in torch.tensor_split(order, folds)]


def fold_split(dataset: RetrievalDataset, folds: int, fold: int, seed: int,
               validation_transform=None) -> tuple[RetrievalDataset, RetrievalDataset]:
    """(train, validation) for fold ``fold`` of ``class_folds(dataset.classes, folds, seed)``:
    that fold's classes validate, the other folds' train (parts as in ``split_by_class``)."""
    if not isinstance(fold, int) or not 0 <= fold < folds:
        raise UserError(f"protocol.fold={fold} must be one of 0..{folds - 1} (protocol.folds={folds}); "
                        f"run every fold with -m 'protocol.fold=range({folds})'.")
    return split_by_class(dataset, class_folds(dataset.classes, folds, seed)[fold], validation_transform)


def split_by_class(dataset: RetrievalDataset, held_out, validation_transform=None
                   ) -> tuple[RetrievalDataset, RetrievalDataset]:
    """(train, validation): the images of the ``held_out`` classes validate, with
    ``validation_transform``; the others train, with ``dataset.transform``."""
    held_out = set(held_out)

    def part(in_validation: bool, transform) -> RetrievalDataset:
        rows = [(path, label) for path, label in zip(dataset.paths, dataset.labels)
                if (label in held_out) == in_validation]
        paths, labels = zip(*rows)
        return RetrievalDataset(dataset.root, dataset.split, transform, rows=(paths, labels),
                                cache_dir=dataset.cache_dir)

    return part(False, dataset.transform), part(True, validation_transform)


def _permutation(n: int, seed: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))
