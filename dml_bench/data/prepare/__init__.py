"""Preparers of the retrieval benchmarks: download, verify, extract safely, write split files.

``prepare_dataset``, ``verify_images`` and ``BadImage`` are imported on first use, so that the
benchmarks' specs (``dml_bench.data.benchmarks``, which imports the modules of this package) do
not pull in the preparer, nor the preparer the specs before they are defined.
"""

from dml_bench.runtime.lazy import lazy_attributes

_EXPORTS = {
    "prepare_dataset": "dml_bench.data.prepare.pipeline",
    "BadImage": "dml_bench.data.prepare.verify",
    "verify_images": "dml_bench.data.prepare.verify",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_attributes(__name__, _EXPORTS)
