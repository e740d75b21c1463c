"""The pairwise cross-entropy of Ermolov et al. (CVPR 2022), spherical variant: InfoNCE between
two images of each class at a time."""

import torch
import torch.nn.functional as F

from dml_bench.losses.base import EmbeddingLoss


class ClassPairNCELoss(EmbeddingLoss):
    """A batch of C classes with m images each (``sampler=m_per_class``), seen as m "views" of the
    C classes: view a holds one image of each class. For every ordered pair of views a != b, each
    image z of view a is classified among view b and the other images of view a, its positive
    being its class's image in view b:

        L_ab = mean over the C classes c of
               -log( exp(s(a_c, b_c) / t) / (sum_k exp(s(a_c, b_k) / t) + sum_{k != c} exp(s(a_c, a_k) / t)) )

    and the loss is the sum of L_ab over the m(m - 1) ordered pairs, as the official code sums
    them (github.com/htdt/hyp_metric, ``train.py``; ``--hyp_c 0``: s is the dot product of
    L2-normalised embeddings). The loss normalises the embeddings itself: with a temperature of 0.1,
    dot products of unnormalised embeddings grow until training diverges. Which image of a class
    is in which view does not matter: the views are the class's images in batch order. Every
    class of the batch must have the same number m >= 2 of images.
    """

    def __init__(self, temperature: float = 0.1):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def compute_loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        _, classes, counts = torch.unique(labels, return_inverse=True, return_counts=True)
        m = int(counts[0])
        if m < 2 or not bool((counts == m).all()):
            raise ValueError("ClassPairNCELoss needs every class of the batch m >= 2 times, the same m for all "
                             f"(sampler=m_per_class); got class sizes {sorted(set(counts.tolist()))}.")
        num_classes = len(counts)
        embeddings = F.normalize(embeddings, dim=1)
        views = embeddings[torch.argsort(classes, stable=True)].view(num_classes, m, -1).transpose(0, 1)
        similarities = torch.einsum("acd,bkd->abck", views, views) / self.temperature  # (m, m, C, C)
        itself = torch.eye(num_classes, dtype=torch.bool, device=embeddings.device)
        within = similarities.diagonal(dim1=0, dim2=1).permute(2, 0, 1).masked_fill(itself, float("-inf"))
        a, b = torch.nonzero(~torch.eye(m, dtype=torch.bool, device=embeddings.device), as_tuple=True)
        logits = torch.cat([similarities[a, b], within[a]], dim=2)  # (m(m-1), C, 2C)
        targets = torch.arange(num_classes, device=embeddings.device).expand(len(a), num_classes)
        per_pair = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view(len(a), -1)
        return per_pair.mean(1).sum()
