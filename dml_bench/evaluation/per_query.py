"""Per-query retrieval values in a compact file: ``per_query.npz`` in the run folder, for the
reported epoch, so that two single runs can be compared by paired tests over the test
queries (``dml_bench.comparison.compare.compare``).

Layout: a compressed NumPy archive (``np.savez_compressed``, read with ``allow_pickle=False``)
holding one array per entry of ``retrieval_metrics(..., per_query=True)``'s second result, in
the order of the kept queries (those with R > 0):

- ``query_index``: int32 (int64 past 2**31 queries), each kept query's index in the query set;
- ``recall@K``, one per K: whether a same-label item is among the K nearest, bit-packed with
  ``np.packbits`` (uint8, 8 queries a byte; ``np.unpackbits(a, count=num_queries)`` reads it);
- ``map@r`` (AP@R) and ``r_precision``: float32;
- ``__meta__``: a 0-d string array, JSON of ``{"format": "dml_bench.per_query/1",
  "num_queries": N, "packed": [the bit-packed names], "metadata": {...}}``; ``metadata`` is the
  caller's (epoch, split, recall_ks... as the trainer gives them).

The mean of each array is the metric of the same name in metrics.json (to 1e-6: float32
values, averaged in float64); ``load_per_query`` gives the arrays back as bool and float32.
"""

import json
import os
from pathlib import Path

import numpy as np

from dml_bench.evaluation.retrieval import QUERY_INDEX, per_query_means

PER_QUERY_FILE = "per_query.npz"
FORMAT = "dml_bench.per_query/1"
_META = "__meta__"


def save_per_query(path: str | Path, per_query: dict[str, np.ndarray], metadata: dict | None = None) -> Path:
    """Write per-query values (``query_index`` and 1-D bool or float arrays of one length) to
    ``path`` (``RUN_DIR/per_query.npz``; a folder gets that name), atomically. ``metadata``
    must be JSON-serialisable."""
    path = Path(path)
    if path.is_dir():
        path = path / PER_QUERY_FILE
    values = {name: np.asarray(value) for name, value in per_query.items()}
    if QUERY_INDEX not in values:
        raise ValueError(f"per-query values need {QUERY_INDEX!r} (each query's index in the query set)")
    num = len(values[QUERY_INDEX])
    arrays, packed = {}, []
    for name, value in values.items():
        if name == _META or value.shape != (num,):
            raise ValueError(f"per-query value {name!r} must be a 1-D array of {num} values; got shape {value.shape}")
        if name == QUERY_INDEX:
            if value.dtype.kind not in "iu":
                raise ValueError(f"{QUERY_INDEX} must hold integers; got {value.dtype}")
            arrays[name] = value.astype(np.int32 if num == 0 or value.max() < 2**31 else np.int64)
        elif value.dtype == np.bool_:
            arrays[name] = np.packbits(value)
            packed.append(name)
        elif value.dtype.kind == "f":
            arrays[name] = value.astype(np.float32)
        else:
            raise ValueError(f"per-query value {name!r} must be bool or float; got {value.dtype}")
    meta = {"format": FORMAT, "num_queries": num, "packed": packed, "metadata": metadata or {}}
    arrays[_META] = np.array(json.dumps(meta))
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)
    return path


def load_per_query(path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """The per-query arrays (bool, float32, and int ``query_index``) and the metadata saved
    with them."""
    path = Path(path)
    if path.is_dir():
        path = path / PER_QUERY_FILE
    with np.load(path, allow_pickle=False) as archive:
        if _META not in archive.files:
            raise ValueError(f"{path} is not a per-query file (no {_META})")
        meta = json.loads(str(archive[_META]))
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path}: format {meta.get('format')!r}, expected {FORMAT!r}")
        num, packed = meta["num_queries"], set(meta["packed"])
        values = {}
        for name in archive.files:
            if name == _META:
                continue
            value = archive[name]
            values[name] = np.unpackbits(value, count=num).astype(bool) if name in packed else value
    return values, meta["metadata"]


def check_against_metrics(values: dict[str, np.ndarray], metrics: dict, *, atol: float = 1e-6) -> list[str]:
    """The metrics whose per-query mean is not the value in ``metrics`` (metrics.json's): each
    as ``name: per-query mean vs metrics.json value``; empty when they all agree."""
    means = per_query_means(values)
    return [f"{name}: {mean:.6f} vs {metrics[name]:.6f}" for name, mean in means.items()
            if name in metrics and not abs(mean - metrics[name]) <= atol]
