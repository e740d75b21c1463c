"""Cross-entropy plus the center loss (eq. 3): a tightness term around learned class centers."""

import torch
from torch import nn

from dml_bench.losses.base import EmbeddingLoss
from dml_bench.losses.cross_entropy import CrossEntropyLoss


class CenterLoss(EmbeddingLoss):
    """loss = CE(z, y) + center_weight * (1/n) sum_i (1/2) ||z_i - c_{y_i}||^2.

    CE is ``CrossEntropyLoss`` (same arguments, same classifier). The center term is eq. 3's
    (1/2) sum_i ||z_i - c_{y_i}||^2 averaged over the batch (divided by n, the usual practice, so
    that ``center_weight`` does not depend on the batch size) and multiplied by ``center_weight``.
    The centers c_k are parameters of shape (num_classes, embedding_size), zero-initialised like the
    classifier and trained by the optimizer with the other loss parameters; gradient descent moves
    c_k towards the mean of its class's features in each batch. The features enter the center term
    as given (no normalisation, no dropout).
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        center_weight: float = 0.01,
        label_smoothing: float = 0.0,
        dropout: float = 0.0,
        temperature: float = 1.0,
    ):
        super().__init__()
        if center_weight < 0:
            raise ValueError(f"center_weight must be >= 0, got {center_weight}")
        self.center_weight = center_weight
        self.cross_entropy = CrossEntropyLoss(
            num_classes,
            embedding_size,
            label_smoothing=label_smoothing,
            dropout=dropout,
            temperature=temperature,
        )
        self.centers = nn.Parameter(torch.zeros(num_classes, embedding_size))

    def center_term(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(1/n) sum_i (1/2) ||z_i - c_{y_i}||^2."""
        offsets = embeddings - self.centers[labels].to(embeddings.dtype)
        return 0.5 * offsets.pow(2).sum(dim=1).mean()

    def compute_loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.cross_entropy.compute_loss(
            embeddings, labels
        ) + self.center_weight * self.center_term(embeddings, labels)
