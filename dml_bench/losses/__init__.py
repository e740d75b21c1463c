"""Our own losses; pairwise losses and miners come from pytorch-metric-learning via ``_target_``."""

from dml_bench.losses.base import EmbeddingLoss
from dml_bench.losses.cross_entropy import CrossEntropyLoss

__all__ = ["CrossEntropyLoss", "EmbeddingLoss"]

from dml_bench.losses.center import CenterLoss  # noqa: E402
from dml_bench.losses.class_pair_nce import ClassPairNCELoss  # noqa: E402
from dml_bench.losses.pce import PCELoss  # noqa: E402
from dml_bench.losses.snca import SNCALoss  # noqa: E402
from dml_bench.losses.spce import SPCELoss  # noqa: E402

__all__ += ["CenterLoss", "ClassPairNCELoss", "PCELoss", "SNCALoss", "SPCELoss"]
