"""Cross-entropy with its own linear classifier, as the paper trains it."""

import torch
import torch.nn.functional as F
from torch import nn

from dml_bench.losses.base import EmbeddingLoss


def smoothed_targets(labels: torch.Tensor, num_classes: int, epsilon: float) -> torch.Tensor:
    """One-hot targets smoothed the paper's way: 1-eps on the true class, eps/(C-1) elsewhere.

    (PyTorch's ``label_smoothing`` gives 1-eps+eps/C and eps/C instead.)
    """
    off_value = epsilon / (num_classes - 1) if num_classes > 1 else 0.0
    targets = torch.full((labels.shape[0], num_classes), off_value, device=labels.device)
    return targets.scatter_(1, labels.view(-1, 1), 1.0 - epsilon)  # on the device: no GPU sync


class CrossEntropyLoss(EmbeddingLoss):
    """Label-smoothed cross-entropy over a ``Linear(embedding_size, num_classes)`` classifier.

    loss = -(1/n) sum_i sum_k t_ik log softmax(logits_i / T)_k, with
    logits_i = theta . dropout(z_i) + b (or cosine logits when ``normalize``), t the smoothed
    targets above. The paper's defaults: zero-initialised weight and bias, dropout before the
    classifier, temperature 1, no normalisation.
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        label_smoothing: float = 0.0,
        dropout: float = 0.0,
        temperature: float = 1.0,
        normalize: bool = False,
        bias: bool = True,
        zero_init: bool = True,
    ):
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.temperature = temperature
        self.normalize = normalize
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(embedding_size, num_classes, bias=bias and not normalize)
        if zero_init and not normalize:
            nn.init.zeros_(self.classifier.weight)
            if self.classifier.bias is not None:
                nn.init.zeros_(self.classifier.bias)

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        features = self.dropout(embeddings)
        if self.normalize:
            weight = F.normalize(self.classifier.weight, dim=1)
            logits = F.linear(F.normalize(features, dim=1), weight)
        else:
            logits = self.classifier(features)
        return logits / self.temperature

    def compute_loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        log_probs = F.log_softmax(self.logits(embeddings).float(), dim=1)
        if self.label_smoothing == 0:
            return F.nll_loss(log_probs, labels)
        targets = smoothed_targets(labels, self.num_classes, self.label_smoothing)
        return -(targets * log_probs).sum(dim=1).mean()
