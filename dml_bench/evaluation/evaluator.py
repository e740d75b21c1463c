"""Embed the evaluation split(s) and compute retrieval metrics."""

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from dml_bench.evaluation import retrieval_metrics
from dml_bench.evaluation.embed import extract_embeddings


class RetrievalEvaluator:
    """Leave-one-out retrieval on ``query_loader``'s split, or query vs. ``gallery_loader``
    (In-Shop). Calling it returns the metrics dict; ``last_embeddings`` keeps what was embedded,
    ``last_per_query`` the per-query values the metrics average (for ``per_query.save_per_query``)."""

    def __init__(
        self,
        query_loader: DataLoader,
        gallery_loader: DataLoader | None = None,
        recall_ks=(1, 2, 4, 8),
        distance: str = "cosine",
        backend: str = "auto",
        progress: bool = True,
    ):
        self.query_loader = query_loader
        self.gallery_loader = gallery_loader
        self.recall_ks = tuple(recall_ks)
        self.distance = distance
        self.backend = backend
        self.progress = progress
        self.last_embeddings: dict[str, torch.Tensor] = {}
        self.last_per_query: dict[str, np.ndarray] = {}

    def embed(self, model: nn.Module, device: torch.device, amp_dtype=None) -> dict[str, torch.Tensor]:
        query, query_labels = extract_embeddings(
            model, self.query_loader, device, amp_dtype, "embed query", self.progress
        )
        out = {"query": query, "query_labels": query_labels}
        if self.gallery_loader is not None:
            gallery, gallery_labels = extract_embeddings(
                model, self.gallery_loader, device, amp_dtype, "embed gallery", self.progress
            )
            out.update(gallery=gallery, gallery_labels=gallery_labels)
        return out

    def __call__(self, model: nn.Module, device: torch.device, amp_dtype=None) -> dict[str, float]:
        self.last_embeddings = self.embed(model, device, amp_dtype)
        e = self.last_embeddings
        metrics, self.last_per_query = retrieval_metrics(
            e["query"],
            e["query_labels"],
            e.get("gallery"),
            e.get("gallery_labels"),
            recall_ks=self.recall_ks,
            distance=self.distance,
            backend=self.backend,
            per_query=True,
        )
        return metrics
