"""Retrieval metrics (placeholder exact torch version; the FAISS-backed evaluator replaces it)."""

import numpy as np
import torch
import torch.nn.functional as F

from dml_bench.evaluation.metric_names import MAP_AT_R, NUM_QUERIES, R_PRECISION, recall_key


def _as_tensor(x) -> torch.Tensor:
    return x.detach().float().cpu() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


def retrieval_metrics(query, query_labels, gallery=None, gallery_labels=None, *, recall_ks=(1, 2, 4, 8),
                      distance="cosine", backend="auto"):
    leave_one_out = gallery is None
    query, query_labels = _as_tensor(query).float(), _as_tensor(query_labels).long()
    gallery = query if leave_one_out else _as_tensor(gallery).float()
    gallery_labels = query_labels if leave_one_out else _as_tensor(gallery_labels).long()
    if distance == "cosine":
        query, gallery = F.normalize(query, dim=1), F.normalize(gallery, dim=1)
        scores = query @ gallery.T
    else:
        scores = -torch.cdist(query, gallery) ** 2
    if leave_one_out:
        scores.fill_diagonal_(-float("inf"))
    same = query_labels[:, None] == gallery_labels[None, :]
    r = same.sum(1) - (1 if leave_one_out else 0) * 0
    keep = r > 0
    k = min(max(max(recall_ks), int(r.max())), gallery.shape[0] - leave_one_out)
    order = scores.topk(k, dim=1).indices
    rel = torch.gather(same, 1, order)[keep].float()
    r = r[keep].float()
    out = {recall_key(kk): rel[:, :kk].any(1).float().mean().item() for kk in recall_ks}
    positions = torch.arange(1, k + 1).float()
    within_r = positions[None, :] <= r[:, None]
    precision_at_i = rel.cumsum(1) / positions
    out[MAP_AT_R] = ((precision_at_i * rel * within_r).sum(1) / r).mean().item()
    out[R_PRECISION] = ((rel * within_r).sum(1) / r).mean().item()
    out[NUM_QUERIES] = int(keep.sum())
    return out
