"""Soft nearest-neighbour (SNCA) loss in the paper's standard form."""

import torch
import torch.nn.functional as F

from dml_bench.losses.base import EmbeddingLoss


class SNCALoss(EmbeddingLoss):
    """SNCA = -(1/|A|) sum_{i in A} log( sum_{j != i, y_j = y_i} exp(z_i.z_j / s)
                                         / sum_{k != i} exp(z_i.z_k / s) ).

    s is ``temperature``. A is the set of anchors with at least one positive (another sample of
    their class in the batch): an anchor without a positive has an empty numerator (log 0), so it
    is left out of the mean rather than making the loss infinite. The paper writes 1/n, which is
    the same when every class in the batch has two samples or more (the usual class-balanced
    sampler). A batch with no anchor in A gives a zero loss that still depends on the embeddings.

    ``normalize`` (default True) L2-normalises the features first, so z_i.z_j is the cosine
    similarity: the retrieval evaluation is cosine, Lemma 1 assumes normalised features, and on
    raw dot products the loss can fall just by inflating feature norms. With similarities in
    [-1, 1] a small temperature is needed for a sharp softmax; the default is 0.05.
    """

    def __init__(self, temperature: float = 0.05, normalize: bool = True):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.normalize = normalize

    def compute_loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        features = F.normalize(embeddings, dim=1) if self.normalize else embeddings
        not_self = ~torch.eye(labels.shape[0], dtype=torch.bool, device=labels.device)
        positive = (labels[:, None] == labels[None, :]) & not_self
        anchors = positive.any(dim=1)
        if not anchors.any():
            return embeddings.sum() * 0.0
        # Only anchors' rows: a row with an empty sum would put NaN into the backward pass.
        similarity = features[anchors] @ features.T / self.temperature
        log_numerator = similarity.masked_fill(~positive[anchors], float("-inf")).logsumexp(dim=1)
        log_denominator = similarity.masked_fill(~not_self[anchors], float("-inf")).logsumexp(dim=1)
        return (log_denominator - log_numerator).mean()
