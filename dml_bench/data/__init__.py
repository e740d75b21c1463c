"""Datasets, transforms, samplers and loaders.

The classes below are imported on first use: ``dml_bench.data.benchmarks`` and the split-file
format are read without importing torch (the Makefile looks benchmarks up that way).
"""

import importlib

_EXPORTS = {
    "MPerClassSampler": "dml_bench.data.samplers",
    "RetrievalDataset": "dml_bench.data.retrieval_dataset",
    "UniformSampler": "dml_bench.data.samplers",
    "read_split": "dml_bench.data.split_files",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
