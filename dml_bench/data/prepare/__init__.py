"""Preparers of the retrieval benchmarks: download, verify, extract safely, write split files.

``prepare_dataset``, ``verify_images`` and ``BadImage`` are imported on first use, so that the
benchmarks' specs (``dml_bench.data.benchmarks``, which imports the modules of this package) do
not pull in the preparer, nor the preparer the specs before they are defined.
"""

import importlib

_EXPORTS = {
    "prepare_dataset": "dml_bench.data.prepare.pipeline",
    "BadImage": "dml_bench.data.prepare.verify",
    "verify_images": "dml_bench.data.prepare.verify",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
