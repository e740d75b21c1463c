"""NMI of a k-means clustering (FAISS, one cluster per class) against the class labels."""

import faiss
import numpy as np
import torch
from sklearn.metrics import normalized_mutual_info_score

from dml_bench.evaluation import faiss_gpu


def kmeans_nmi(embeddings: torch.Tensor, labels: torch.Tensor, *, seed: int = 0) -> float:
    """NMI between labels (num,) and k-means clusters of embeddings (num, dim).

    FAISS k-means, 20 iterations, seeded; on the GPU where FAISS's GPU path runs.
    """
    x = np.ascontiguousarray(embeddings.detach().cpu().numpy(), dtype=np.float32)
    num_classes = len(torch.unique(labels))
    kmeans = faiss.Kmeans(
        x.shape[1],
        num_classes,
        niter=20,
        seed=seed,
        gpu=faiss_gpu.gpu_state() == faiss_gpu.USABLE,
        min_points_per_centroid=1,  # few images per class is normal here; silence FAISS' warning
    )
    kmeans.train(x)
    clusters = kmeans.index.search(x, 1)[1][:, 0]
    return float(normalized_mutual_info_score(labels.cpu().numpy(), clusters))
