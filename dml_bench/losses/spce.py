"""Simplified pairwise cross-entropy (SPCE, eq. 15)."""

import torch
import torch.nn.functional as F

from dml_bench.losses.base import EmbeddingLoss


class SPCELoss(EmbeddingLoss):
    """L_SPCE = -(1/n^2) sum_i sum_{j: y_j = y_i} z_i.z_j
               + (1/n) sum_i log sum_k exp( (1/n) sum_{j: y_j = k} z_i.z_j ).

    Eq. 15 as written: the features are used as given (no normalisation), k runs over the classes
    present in the batch, j = i is included in both sums, and the outer sums are means over the
    n samples. It is the cross-entropy of the logits z_i.theta_k with the classifier
    theta_k = (1/n) sum_{j: y_j = k} z_j (class sums divided by the batch size, no bias), which is
    how it is computed. Any floating dtype is kept (float64 in, float64 out).
    """

    def compute_loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        _, targets = torch.unique(labels, return_inverse=True)
        membership = F.one_hot(targets).to(embeddings.dtype)
        classifier = membership.T @ embeddings / embeddings.shape[0]
        return F.cross_entropy(embeddings @ classifier.T, targets)
