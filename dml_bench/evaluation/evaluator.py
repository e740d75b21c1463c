"""Embed the evaluation split(s) and compute retrieval metrics."""

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from dml_bench.evaluation import retrieval_metrics
from dml_bench.evaluation.embed import extract_embeddings
from dml_bench.oom import suggest_smaller_batch


@dataclass(frozen=True)
class Evaluation:
    """What one evaluation computed: the metrics, the embeddings they were computed from
    (``query``, ``query_labels`` and, with a gallery, ``gallery``, ``gallery_labels``), and each
    query's values (``retrieval_metrics(per_query=True)``: the metrics are their means); ``split``
    says which split was embedded: ``test`` or ``validation``."""

    metrics: dict[str, float]
    embeddings: dict[str, torch.Tensor]
    per_query: dict[str, np.ndarray] | None = None
    split: str = "test"


class RetrievalEvaluator:
    """Leave-one-out retrieval on ``query_loader``'s split, or query vs. ``gallery_loader``
    (In-Shop). Calling it embeds the split(s) and returns an :class:`Evaluation` of ``split``."""

    def __init__(
        self,
        query_loader: DataLoader,
        gallery_loader: DataLoader | None = None,
        recall_ks=(1, 2, 4, 8),
        distance: str = "cosine",
        backend: str = "auto",
        progress: bool = True,
        split: str = "test",
    ):
        self.query_loader = query_loader
        self.gallery_loader = gallery_loader
        self.recall_ks = tuple(recall_ks)
        self.distance = distance
        self.backend = backend
        self.progress = progress
        self.split = split

    def embed(self, model: nn.Module, device: torch.device, amp_dtype=None) -> dict[str, torch.Tensor]:
        out = {}
        for role, loader in (("query", self.query_loader), ("gallery", self.gallery_loader)):
            if loader is None:
                continue
            with suggest_smaller_batch("evaluation", "evaluation.batch_size", loader.batch_size):
                embeddings, labels = extract_embeddings(model, loader, device, amp_dtype, f"embed {role}",
                                                        self.progress)
            out.update({role: embeddings, f"{role}_labels": labels})
        return out

    def __call__(self, model: nn.Module, device: torch.device, amp_dtype=None) -> Evaluation:
        e = self.embed(model, device, amp_dtype)
        metrics, per_query = retrieval_metrics(e["query"], e["query_labels"], e.get("gallery"),
                                               e.get("gallery_labels"), recall_ks=self.recall_ks,
                                               distance=self.distance, backend=self.backend, per_query=True)
        return Evaluation(metrics, e, per_query, self.split)
