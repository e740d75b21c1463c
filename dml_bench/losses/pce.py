"""Pairwise cross-entropy (PCE): cross-entropy after one closed-form bound step on the classifier.

Derivation, assumptions and the inequality it rests on: ``docs/pce.md``.
"""

import torch
import torch.nn.functional as F

from dml_bench.losses.base import EmbeddingLoss


def concavity_lambda(embeddings: torch.Tensor) -> torch.Tensor:
    """lambda = (1/2) * largest eigenvalue of (1/n) Z^T Z, computed without gradient.

    The smallest lambda for which f2(theta) = (1/n) sum_i lse_k(theta_k.z_i) - (lambda/2)||theta||^2
    is concave for every theta (docs/pce.md, section 2). The eigenvalue is taken on the smaller of
    the two Gram matrices (same nonzero spectrum), in at least float32. It is clamped to the
    dtype's eps so that an all-zero batch gives a zero step instead of 0/0.
    """
    features = embeddings.detach().to(torch.promote_types(embeddings.dtype, torch.float32))
    n, d = features.shape
    gram = features @ features.T if n <= d else features.T @ features
    top = torch.linalg.eigvalsh(gram / n)[-1]
    return (0.5 * top).clamp_min(torch.finfo(features.dtype).eps).to(embeddings.dtype)


class PCELoss(EmbeddingLoss):
    """L_PCE(Z) = CE(theta', Z), the cross-entropy (no bias) at the classifier

        theta'_k = theta_k + (1/(lambda n)) sum_j (1[y_j = k] - p_jk) z_j,  p_j = softmax(theta z_j)

    i.e. with logits  theta_k.z_i + (1/(lambda n)) sum_j (1[y_j = k] - p_jk) z_i.z_j :

        L_PCE = -(1/n) sum_i theta_{y_i}.z_i
                - (1/(lambda n^2)) sum_i sum_{j: y_j = y_i} z_i.z_j      (tightness)
                + (1/(lambda n)) sum_i z_i.c^s_{y_i}                    (soft-mean correction)
                + (1/n) sum_i log sum_k exp( theta_k.z_i + (1/(lambda n)) sum_{j: y_j = k} z_i.z_j
                                             - (1/lambda) z_i.c^s_k )   (contrastive)

    with soft means c^s_k = (1/n) sum_j p_jk z_j, class sums m_k = (1/n) sum_{j: y_j = k} z_j and
    lambda = (1/2) lambda_max((1/n) Z^T Z), computed per batch and detached (a step size: the
    bound holds for any larger value). theta' minimises the quadratic majoriser of CE(., Z) at
    theta, so for every batch
    L_PCE(Z) <= CE(theta, Z) - (1/(2 lambda)) ||M - C^s||^2 <= CE(theta, Z)  (docs/pce.md).

    theta is a buffer of shape (num_classes, embedding_size), zero at start (there, with every
    class in the batch, L_PCE is SPCE of Z / sqrt(lambda)). In training mode each call replaces
    it by theta' (detached), the closed-form classifier step of the alternating CE minimisation;
    in eval mode it is left alone. k runs over all num_classes; features are used as given; the
    input dtype is kept.
    """

    def __init__(self, num_classes: int, embedding_size: int):
        super().__init__()
        self.num_classes = num_classes
        self.register_buffer("classifier", torch.zeros(num_classes, embedding_size))

    def compute_loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        n = embeddings.shape[0]
        classifier = self.classifier.to(embeddings.dtype, copy=True)  # the buffer is updated below
        probabilities = F.softmax(embeddings @ classifier.T, dim=1)
        residual = F.one_hot(labels, self.num_classes).to(embeddings.dtype) - probabilities
        step = residual.T @ embeddings / (concavity_lambda(embeddings) * n)
        next_classifier = classifier + step
        if self.training:
            self.classifier.copy_(next_classifier.detach())
        return F.cross_entropy(embeddings @ next_classifier.T, labels)
