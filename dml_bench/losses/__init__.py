"""Our own losses; pairwise losses and miners come from pytorch-metric-learning via ``_target_``."""

from dml_bench.losses.base import EmbeddingLoss
from dml_bench.losses.cross_entropy import CrossEntropyLoss

__all__ = ["CrossEntropyLoss", "EmbeddingLoss"]
