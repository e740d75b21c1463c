"""Evaluation: exact k-NN retrieval metrics (and NMI) of embeddings."""

from dml_bench.evaluation.knn import nearest_neighbors
from dml_bench.evaluation.retrieval import retrieval_metrics

__all__ = ["nearest_neighbors", "retrieval_metrics"]
