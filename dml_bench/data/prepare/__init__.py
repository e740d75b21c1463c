"""Preparers of the retrieval benchmarks: download, verify, extract safely, write split files."""

from dml_bench.data.prepare.pipeline import DATASETS, prepare_dataset
from dml_bench.data.prepare.verify import BadImage, verify_images

__all__ = ["DATASETS", "BadImage", "prepare_dataset", "verify_images"]
