"""Embed the evaluation split(s) and compute retrieval metrics."""

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from dml_bench.evaluation import retrieval_metrics
from dml_bench.evaluation.embed import extract_embeddings
from dml_bench.evaluation.metric_names import euclidean_key, recall_key
from dml_bench.runtime.distributed import SINGLE_PROCESS, World, gather_rows
from dml_bench.runtime.oom import suggest_smaller_batch


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
    (In-Shop). Calling it embeds the split(s) and returns an :class:`Evaluation` of ``split``.

    ``exclude`` is ``retrieval_metrics``'s (how leave-one-out leaves the query out);
    ``euclidean_recall`` also reports Recall@K with euclidean distance (``euclidean_recall@K``),
    as the paper's official code does; the other metrics, and so the epoch selection, stay cosine.

    Under DDP (``world`` of several ranks) every rank calls it: each loader holds its rank's
    ``distributed.shard`` of the split, the shards are gathered in dataset order, and rank 0
    computes the metrics (the other ranks get None)."""

    def __init__(
        self,
        query_loader: DataLoader,
        gallery_loader: DataLoader | None = None,
        recall_ks=(1, 2, 4, 8),
        distance: str = "cosine",
        backend: str = "auto",
        progress: bool = True,
        exclude: str = "index",
        euclidean_recall: bool = False,
        world: World = SINGLE_PROCESS,
        split: str = "test",
    ):
        self.query_loader = query_loader
        self.gallery_loader = gallery_loader
        self.recall_ks = tuple(recall_ks)
        self.distance = distance
        self.backend = backend
        self.progress = progress
        self.exclude = exclude
        self.euclidean_recall = euclidean_recall
        self.world = world
        self.split = split

    def embed(self, model: nn.Module, device: torch.device, amp_dtype=None) -> dict[str, torch.Tensor]:
        """Each split's embeddings and labels, in dataset order (on every rank)."""
        out = {}
        for role, loader in (("query", self.query_loader), ("gallery", self.gallery_loader)):
            if loader is None:
                continue
            with suggest_smaller_batch("evaluation", "evaluation.batch_size", loader.batch_size):
                embeddings, labels = extract_embeddings(model, loader, device, amp_dtype, f"embed {role}",
                                                        self.progress)
            if self.world.size > 1:
                embeddings, labels = self._gathered(role, loader, embeddings)
            out.update({role: embeddings, f"{role}_labels": labels})
        return out

    def _gathered(self, role: str, loader: DataLoader, embeddings: torch.Tensor):
        """The ranks' shards of a split, in rank order, checked to be the whole split in dataset
        order with each image exactly once; and the split's labels."""
        dataset = loader.dataset
        order = gather_rows(torch.as_tensor(list(loader.sampler), device=embeddings.device), self.world)
        if not torch.equal(order.cpu(), torch.arange(len(dataset))):
            raise RuntimeError(f"the {self.world.size} ranks embedded {len(order)} images of the {role} split, "
                               f"not its {len(dataset)} images once each in dataset order")
        return gather_rows(embeddings, self.world), torch.as_tensor(dataset.labels)

    def __call__(self, model: nn.Module, device: torch.device, amp_dtype=None) -> Evaluation | None:
        e = self.embed(model, device, amp_dtype)
        if not self.world.is_main:
            return None
        sets = (e["query"], e["query_labels"], e.get("gallery"), e.get("gallery_labels"))
        options = {"recall_ks": self.recall_ks, "backend": self.backend, "exclude": self.exclude}
        metrics, per_query = retrieval_metrics(*sets, distance=self.distance, per_query=True, **options)
        if self.euclidean_recall:
            euclidean = retrieval_metrics(*sets, distance="euclidean", **options)
            metrics.update({euclidean_key(recall_key(k)): euclidean[recall_key(k)] for k in self.recall_ks})
        return Evaluation(metrics, e, per_query, self.split)
