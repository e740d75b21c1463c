"""The one call signature every dml_bench loss shares: ``loss(embeddings, labels, indices_tuple=None)``."""

import torch
from torch import nn


class EmbeddingLoss(nn.Module):
    """Base of our own losses: checks shapes and devices, then calls ``compute_loss``.

    Subclasses write only the formula. ``accepts_indices_tuple`` says whether a miner's output
    means anything to the loss; a miner paired with a loss where it is False is a config error.
    """

    accepts_indices_tuple = False

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, indices_tuple=None):
        if embeddings.ndim != 2:
            raise ValueError(f"embeddings must be (batch, dim), got shape {tuple(embeddings.shape)}")
        if labels.ndim != 1 or labels.shape[0] != embeddings.shape[0]:
            raise ValueError(
                f"labels must be (batch,) matching embeddings {tuple(embeddings.shape)}, "
                f"got {tuple(labels.shape)}"
            )
        if indices_tuple is not None and not self.accepts_indices_tuple:
            raise ValueError(f"{type(self).__name__} does not use mined pairs or triplets")
        labels = labels.to(embeddings.device)
        if self.accepts_indices_tuple:
            return self.compute_loss(embeddings, labels, indices_tuple)
        return self.compute_loss(embeddings, labels)

    def compute_loss(self, embeddings: torch.Tensor, labels: torch.Tensor, *args) -> torch.Tensor:
        raise NotImplementedError
