"""Retrieval grids: one row per query, the query then its K nearest gallery images, each framed
by whether it has the query's class, with its similarity to the query under it.

Two grids per evaluation: ``sample``, a seeded sample of the queries (the same queries at every
epoch of a run), and ``worst``, the queries of lowest AP@R (``map@r`` in ``Evaluation.per_query``).
The neighbours are the ones the metrics were computed from: the same exact search
(``evaluation.knn.nearest_neighbors``), leave-one-out excluding the query itself, or the gallery
where there is one (In-Shop).
"""

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from dml_bench.evaluation.evaluator import Evaluation
from dml_bench.evaluation.knn import nearest_neighbors
from dml_bench.evaluation.metric_names import MAP_AT_R
from dml_bench.evaluation.retrieval import DISTANCES, QUERY_INDEX
from dml_bench.visualize.thumbnails import thumbnail

# Frame colours (Okabe-Ito, told apart with any colour vision): a neighbour of the query's class is
# framed green, one of another class red, the query itself dark grey.
SAME_CLASS = (0, 158, 115)
OTHER_CLASS = (213, 94, 0)
QUERY = (64, 64, 64)
# A tile: a white margin, the frame, the picture, and a caption strip under the frame.
PICTURE, FRAME, MARGIN, CAPTION = 96, 4, 2, 16
TILE_WIDTH = PICTURE + 2 * (FRAME + MARGIN)
TILE_HEIGHT = TILE_WIDTH + CAPTION


@dataclass(frozen=True)
class GridSettings:
    """``k`` neighbours per row, ``queries`` rows per grid, ``seed`` for the sampled queries; the
    search as the evaluation's (``evaluation.distance``, ``evaluation.backend``)."""

    k: int = 8
    queries: int = 8
    seed: int = 0
    distance: str = "cosine"
    backend: str = "auto"

    @classmethod
    def of(cls, config, retrievals) -> "GridSettings":
        """From a run's config (its ``evaluation``) and the ``retrievals`` settings, dicts or
        DictConfigs: the one reading of these keys."""
        return cls(k=retrievals["k"], queries=retrievals["queries"], seed=retrievals["seed"],
                   distance=config["evaluation"]["distance"], backend=config["evaluation"]["backend"])


@dataclass(frozen=True)
class Row:
    """One query's row: its index in the query set and AP@R, its neighbours' gallery indices
    (nearest first), whether each has the query's class, and each one's cosine similarity to the
    query (``distance=euclidean``: squared distance)."""

    query: int
    ap: float
    neighbors: list[int]
    same_class: list[bool]
    scores: list[float]


def chosen_queries(per_query: dict[str, np.ndarray], count: int, seed: int) -> dict[str, np.ndarray]:
    """Query indices of each grid: ``sample``, ``count`` queries drawn without replacement by a
    generator seeded with ``seed`` (in increasing index), and ``worst``, the ``count`` of lowest
    AP@R, lowest first (ties by index). Only queries with a same-class item (those in
    ``per_query``) are chosen."""
    index, ap = per_query[QUERY_INDEX], per_query[MAP_AT_R]
    count = min(count, len(index))
    sample = np.sort(np.random.default_rng(seed).choice(index, size=count, replace=False))
    worst = index[np.argsort(ap, kind="stable")[:count]]
    return {"sample": sample, "worst": worst}


def retrieval_rows(evaluation: Evaluation, queries: np.ndarray, settings: GridSettings) -> list[Row]:
    """The rows of ``queries`` (indices in the query set), searched in ``evaluation.embeddings``."""
    e = evaluation.embeddings
    query, query_labels = e["query"], e["query_labels"].cpu()
    leave_one_out = "gallery" not in e
    gallery, gallery_labels = (query, query_labels) if leave_one_out else (e["gallery"], e["gallery_labels"].cpu())
    if settings.distance == "cosine":
        query, gallery = F.normalize(query, dim=1), F.normalize(gallery, dim=1)
    rows = torch.as_tensor(queries, dtype=torch.long, device=query.device)
    k = min(settings.k, len(gallery) - leave_one_out)
    neighbors = nearest_neighbors(query[rows], gallery, k, metric=DISTANCES[settings.distance],
                                  backend=settings.backend, exclude=rows if leave_one_out else None)
    picked, near = query[rows].cpu(), gallery[neighbors.to(gallery.device)].cpu()  # (rows, dim), (rows, k, dim)
    neighbors = neighbors.cpu()
    if settings.distance == "cosine":
        scores = torch.einsum("rd,rkd->rk", picked, near)
    else:
        scores = ((near - picked[:, None]) ** 2).sum(2)
    ap = dict(zip(evaluation.per_query[QUERY_INDEX].tolist(), evaluation.per_query[MAP_AT_R].tolist()))
    return [Row(q, ap[q], n.tolist(), (gallery_labels[n] == query_labels[q]).tolist(), s.tolist())
            for q, n, s in zip(rows.tolist(), neighbors, scores)]


def draw_grid(rows: list[Row], query_set, gallery_set) -> Image.Image:
    """The grid of ``rows`` (``len(rows)`` x (1 + K) tiles of TILE_WIDTH x TILE_HEIGHT pixels)
    with pictures from ``query_set`` and ``gallery_set`` (RetrievalDatasets; the same one for
    leave-one-out). The query's caption is its AP@R, a neighbour's its score."""
    columns = 1 + max(len(row.neighbors) for row in rows)
    grid = Image.new("RGB", (columns * TILE_WIDTH, len(rows) * TILE_HEIGHT), "white")
    draw, font = ImageDraw.Draw(grid), ImageFont.load_default()
    for r, row in enumerate(rows):
        tiles = [(query_set, row.query, QUERY, f"AP@R = {row.ap:.2f}")]
        tiles += [(gallery_set, n, SAME_CLASS if same else OTHER_CLASS, f"{score:.3f}")
                  for n, same, score in zip(row.neighbors, row.same_class, row.scores)]
        for c, (dataset, index, colour, caption) in enumerate(tiles):
            left, top = c * TILE_WIDTH + MARGIN, r * TILE_HEIGHT + MARGIN
            side = PICTURE + 2 * FRAME
            draw.rectangle((left, top, left + side - 1, top + side - 1), fill=colour)
            grid.paste(thumbnail(dataset, index, PICTURE), (left + FRAME, top + FRAME))
            draw.text((left + (side - draw.textlength(caption, font=font)) / 2, top + side + 2), caption,
                      fill="black", font=font)
    return grid


def retrieval_grids(evaluation: Evaluation, query_set, gallery_set, settings: GridSettings) -> dict[str, Image.Image]:
    """The ``sample`` and ``worst`` grids of an evaluation whose query (and gallery) embeddings
    are those of ``query_set`` (and ``gallery_set``; None for leave-one-out)."""
    chosen = chosen_queries(evaluation.per_query, settings.queries, settings.seed)
    return {name: draw_grid(retrieval_rows(evaluation, queries, settings), query_set, gallery_set or query_set)
            for name, queries in chosen.items()}
