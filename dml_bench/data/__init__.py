"""Datasets, transforms, samplers and loaders.

The classes below are imported on first use: ``dml_bench.data.benchmarks`` and the split-file
format are read without importing torch (the Makefile looks benchmarks up that way).
"""

from dml_bench.runtime.lazy import lazy_attributes

_EXPORTS = {
    "MPerClassSampler": "dml_bench.data.samplers",
    "RetrievalDataset": "dml_bench.data.retrieval_dataset",
    "UniformSampler": "dml_bench.data.samplers",
    "read_split": "dml_bench.data.split_files",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_attributes(__name__, _EXPORTS)
