"""Datasets, transforms, samplers and loaders."""

from dml_bench.data.retrieval_dataset import RetrievalDataset, read_split
from dml_bench.data.samplers import MPerClassSampler, UniformSampler

__all__ = ["MPerClassSampler", "RetrievalDataset", "UniformSampler", "read_split"]
