"""Retrieval grids and the embedding projector, read back: the PNG's tiles against a float64
brute-force search, the TensorBoard image events and the projector's files."""

import csv
import json
import math

import numpy as np
import pytest
import torch
from google.protobuf import text_format
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

from dml_bench.data.loaders import make_loader
from dml_bench.data.retrieval_dataset import RetrievalDataset
from dml_bench.evaluation import retrieval_metrics
from dml_bench.evaluation.embed import extract_embeddings
from dml_bench.evaluation.evaluator import Evaluation
from dml_bench.runtime.files import read_jsonl
from dml_bench.visualize.projector import Projector
from dml_bench.visualize.recorder import RetrievalBoard
from dml_bench.visualize.retrievals import (
    FRAME,
    MARGIN,
    OTHER_CLASS,
    PICTURE,
    QUERY,
    SAME_CLASS,
    TILE_HEIGHT,
    TILE_WIDTH,
    GridSettings,
    retrieval_grids,
    retrieval_rows,
)
from tests.helpers.config import ROOT
from tests.helpers.runs import tensorboard_dir

WHITE = (255, 255, 255)


def colour(i: int) -> tuple[int, int, int]:
    """A colour of its own for each of up to 40 images."""
    return (10 + 6 * i, 250 - 5 * i, (60 + 29 * i) % 256)


def solid_images(root, split: str, labels: list[int], first: int = 0) -> RetrievalDataset:
    """A split of 10x6 (not square) one-colour PNGs, image i of colour(first + i)."""
    (root / "img").mkdir(parents=True, exist_ok=True)
    (root / "splits").mkdir(exist_ok=True)
    lines = ["path,label"]
    for i, label in enumerate(labels):
        path = f"img/{split}_{i}.png"
        Image.new("RGB", (10, 6), colour(first + i)).save(root / path)
        lines.append(f"{path},{label}")
    (root / "splits" / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return RetrievalDataset(root, split)


def evaluation_of(query, query_labels, gallery=None, gallery_labels=None, split="test") -> Evaluation:
    metrics, per_query = retrieval_metrics(query, query_labels, gallery, gallery_labels, per_query=True)
    embeddings = {"query": query, "query_labels": query_labels}
    if gallery is not None:
        embeddings.update(gallery=gallery, gallery_labels=gallery_labels)
    return Evaluation(metrics, embeddings, per_query, split)


def brute_force(query, gallery=None):
    """Each query's gallery items nearest first (ties by index) and the float64 cosine
    similarities; leave-one-out (the query left out) without a gallery."""
    q = query.double().numpy()
    g = q if gallery is None else gallery.double().numpy()
    q, g = q / np.linalg.norm(q, axis=1, keepdims=True), g / np.linalg.norm(g, axis=1, keepdims=True)
    similarity = q @ g.T
    if gallery is None:
        np.fill_diagonal(similarity, -np.inf)
    return np.argsort(-similarity, axis=1, kind="stable"), similarity


def ap_at_r(order, query_labels, gallery_labels, leave_one_out):
    """Each query's AP@R, from the definition."""
    values = []
    for q, row in enumerate(order):
        same = np.asarray(gallery_labels)[row] == query_labels[q]
        r = int((np.asarray(gallery_labels) == query_labels[q]).sum()) - leave_one_out
        relevant = same[:r]
        values.append((np.cumsum(relevant) / np.arange(1, r + 1) * relevant).sum() / r)
    return np.array(values)


def tile(grid: Image.Image, row: int, column: int) -> tuple[tuple, tuple]:
    """(frame colour, colour at the picture's centre) of a tile."""
    left, top = column * TILE_WIDTH + MARGIN, row * TILE_HEIGHT + MARGIN
    centre = PICTURE // 2 + FRAME
    return grid.getpixel((left + 1, top + 1)), grid.getpixel((left + centre, top + centre))


def frames_in_row(grid: Image.Image, row: int) -> int:
    """Framed tiles met along a line through the top of the row's frames."""
    y = row * TILE_HEIGHT + MARGIN + 1
    framed = [grid.getpixel((x, y)) != WHITE for x in range(grid.width)]
    return sum(1 for x in range(len(framed)) if framed[x] and (x == 0 or not framed[x - 1]))


@pytest.fixture
def loo(tmp_path):
    """20 images of 5 classes, random 4-d embeddings: leave-one-out retrieval."""
    labels = [i % 5 for i in range(20)]
    dataset = solid_images(tmp_path, "test", labels)
    embeddings = torch.randn(20, 4, generator=torch.Generator().manual_seed(0))
    return dataset, evaluation_of(embeddings, torch.tensor(labels))


def test_each_row_is_the_query_then_its_nearest_framed_by_class(loo):
    dataset, evaluation = loo
    k, queries = 5, 4
    grids = retrieval_grids(evaluation, dataset, None, GridSettings(k=k, queries=queries, seed=3))
    order, _ = brute_force(evaluation.embeddings["query"])
    labels = np.array(dataset.labels)
    index_of_colour = {colour(i): i for i in range(len(dataset))}
    rows = {}
    for name, grid in grids.items():
        assert grid.size == ((1 + k) * TILE_WIDTH, queries * TILE_HEIGHT)
        rows[name] = []
        for r in range(queries):
            assert frames_in_row(grid, r) == 1 + k
            frame, centre = tile(grid, r, 0)
            query = index_of_colour[centre]
            assert frame == QUERY
            rows[name].append(query)
            for c, neighbor in enumerate(order[query, :k], start=1):
                frame, centre = tile(grid, r, c)
                assert centre == colour(neighbor)
                assert frame == (SAME_CLASS if labels[neighbor] == labels[query] else OTHER_CLASS)
    ap = ap_at_r(order, labels, labels, leave_one_out=True)
    assert rows["worst"] == np.lexsort((np.arange(20), ap))[:queries].tolist()
    assert rows["sample"] == sorted(set(rows["sample"]))
    again = retrieval_grids(evaluation, dataset, None, GridSettings(k=k, queries=queries, seed=3))
    assert np.array_equal(np.asarray(again["sample"]), np.asarray(grids["sample"]))
    other_seed = retrieval_grids(evaluation, dataset, None, GridSettings(k=k, queries=queries, seed=4))
    assert [index_of_colour[tile(other_seed["sample"], r, 0)[1]] for r in range(queries)] != rows["sample"]


def test_the_scores_under_the_tiles_are_the_similarities(loo):
    dataset, evaluation = loo
    _, similarity = brute_force(evaluation.embeddings["query"])
    for row in retrieval_rows(evaluation, np.array([0, 7]), GridSettings(k=4)):
        assert row.scores == pytest.approx(similarity[row.query, row.neighbors].tolist(), abs=1e-6)
    x = evaluation.embeddings["query"].double()
    euclidean = retrieval_rows(evaluation, np.array([3]), GridSettings(k=4, distance="euclidean"))[0]
    squared = ((x - x[3]) ** 2).sum(1)
    squared[3] = math.inf
    assert euclidean.neighbors == torch.argsort(squared)[:4].tolist()
    assert euclidean.scores == pytest.approx(squared[euclidean.neighbors].tolist(), rel=1e-5)
    grid = retrieval_grids(evaluation, dataset, None, GridSettings(k=2, queries=1))["sample"]
    for c in range(3):  # every tile has a caption: dark pixels in the strip under its frame
        left, top = c * TILE_WIDTH, MARGIN + PICTURE + 2 * FRAME
        strip = np.asarray(grid.crop((left, top, left + TILE_WIDTH, TILE_HEIGHT)))
        assert (strip < 100).all(axis=2).any()


def test_in_shop_rows_come_from_the_gallery(tmp_path):
    query_labels, gallery_labels = [0, 1, 2, 0, 1, 2], [i % 3 for i in range(12)]
    query_set = solid_images(tmp_path, "query", query_labels)
    gallery_set = solid_images(tmp_path, "gallery", gallery_labels, first=len(query_labels))
    generator = torch.Generator().manual_seed(1)
    query, gallery = torch.randn(6, 3, generator=generator), torch.randn(12, 3, generator=generator)
    evaluation = evaluation_of(query, torch.tensor(query_labels), gallery, torch.tensor(gallery_labels))
    grid = retrieval_grids(evaluation, query_set, gallery_set, GridSettings(k=12, queries=6))["sample"]
    order, _ = brute_force(query, gallery)
    assert grid.size == (13 * TILE_WIDTH, 6 * TILE_HEIGHT)
    for r in range(6):  # all six queries, in index order
        assert tile(grid, r, 0) == (QUERY, colour(r))
        for c, neighbor in enumerate(order[r], start=1):
            same = gallery_labels[neighbor] == query_labels[r]
            assert tile(grid, r, c) == (SAME_CLASS if same else OTHER_CLASS, colour(6 + neighbor))
    # The projector shows both sets: a subsample of the 18 points, queries first.
    projector = Projector({"query": query_set, "gallery": gallery_set}, max_points=10, seed=0)
    metadata = projector.metadata()
    roles = [role for _, _, role in metadata]
    assert len(metadata) == 10 and roles == sorted(roles, reverse=True) and set(roles) == {"query", "gallery"}
    sets = {"query": (query_set, query), "gallery": (gallery_set, gallery)}
    expected = torch.stack([sets[role][1][sets[role][0].paths.index(path)] for _, path, role in metadata])
    assert projector.points(evaluation) == pytest.approx(torch.nn.functional.normalize(expected, dim=1), abs=1e-6)


def read_projector(log_dir):
    """The projector config's one embedding, its vectors and its metadata rows."""
    config = text_format.Parse((log_dir / "projector_config.pbtxt").read_text(), ProjectorConfig())
    assert len(config.embeddings) == 1
    embedding = config.embeddings[0]
    vectors = np.loadtxt(log_dir / embedding.tensor_path, delimiter="\t", ndmin=2)
    with open(log_dir / embedding.metadata_path, newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    assert rows[0] == ["label", "path"]  # leave-one-out: no "set" column
    return embedding, vectors, rows[1:]


def images(log_dir) -> dict[str, list]:
    events = EventAccumulator(str(log_dir), size_guidance={"images": 0})
    events.Reload()
    return {tag: events.Images(tag) for tag in events.Tags()["images"]}


def test_the_board_draws_each_new_best_and_projects_the_last(loo, tmp_path):
    dataset, first = loo
    moved = first.embeddings["query"] + torch.randn(20, 4, generator=torch.Generator().manual_seed(1))
    second = evaluation_of(moved, first.embeddings["query_labels"])
    board = RetrievalBoard(tmp_path / "tb", {"query": dataset}, GridSettings(k=3, queries=2),
                           Projector({"query": dataset}, max_points=7, seed=0))
    board.open(None, [])
    for epoch, step, evaluation in ((0, 0, first), (2, 10, second)):
        board.evaluation({"epoch": epoch, "step": step})
        board.selected(epoch, evaluation)
    board.close()
    drawn = images(tmp_path / "tb")
    assert set(drawn) == {"retrievals/sample", "retrievals/worst"}
    for events in drawn.values():
        assert [(e.step, e.width, e.height) for e in events] == [(s, 4 * TILE_WIDTH, 2 * TILE_HEIGHT) for s in (0, 10)]
    embedding, vectors, metadata = read_projector(tmp_path / "tb")
    assert embedding.tensor_name == "test:00010"
    assert vectors.shape == (7, 4) and len(metadata) == 7
    chosen = [dataset.paths.index(path) for _, path in metadata]
    assert len(set(chosen)) == 7
    assert [int(label) for label, _ in metadata] == [dataset.labels[i] for i in chosen]
    expected = torch.nn.functional.normalize(moved[chosen], dim=1).numpy()
    assert vectors == pytest.approx(expected, abs=1e-6)
    sprite = Image.open(tmp_path / "tb" / embedding.sprite.image_path)
    assert sprite.size == (3 * 32, 3 * 32)  # ceil(sqrt(7)) thumbnails a side
    assert sprite.getpixel((16, 16)) == colour(chosen[0])


def test_validation_evaluations_are_not_drawn_and_the_final_test_is(loo, tmp_path):
    """protocol=rigorous: the trainer selects on validation, closes, then the test evaluation of the
    selected checkpoint arrives."""
    dataset, test = loo
    validation = evaluation_of(torch.randn(6, 4), torch.tensor([0, 0, 1, 1, 2, 2]), split="validation")
    board = RetrievalBoard(tmp_path / "tb", {"query": dataset}, GridSettings(k=3, queries=2),
                           Projector({"query": dataset}, max_points=50, seed=0))
    board.open(None, [])
    board.evaluation({"epoch": 0, "step": 0})
    board.evaluation({"epoch": 1, "step": 4})
    board.selected(1, validation)
    board.close()
    assert images(tmp_path / "tb") == {} and not (tmp_path / "tb" / "projector_config.pbtxt").exists()
    board.selected(1, test)
    assert {tag: [e.step for e in events] for tag, events in images(tmp_path / "tb").items()} == {
        "retrievals/sample": [4], "retrievals/worst": [4]}
    embedding, vectors, metadata = read_projector(tmp_path / "tb")
    assert embedding.tensor_name == "test:00004" and len(vectors) == len(metadata) == 20


def test_an_interrupted_run_keeps_its_grids_and_leaves_the_projector_to_its_end(loo, tmp_path):
    dataset, evaluation = loo
    board = RetrievalBoard(tmp_path / "tb", {"query": dataset}, GridSettings(k=3, queries=2),
                           Projector({"query": dataset}, max_points=7, seed=0))
    board.open(None, [])
    board.evaluation({"epoch": 0, "step": 0})
    board.selected(0, evaluation)
    board.interrupted()  # Ctrl-C: the resumed run writes the projector of its selected epoch at its end
    assert set(images(tmp_path / "tb")) == {"retrievals/sample", "retrievals/worst"}
    assert not (tmp_path / "tb" / "projector_config.pbtxt").exists()


def test_the_quickstart_logs_its_selected_epoch(quickstart_run):
    """experiment=quickstart turns trainer.log_retrievals on: the best epoch's grids at its step, and
    the projector of its test embeddings (recomputed from best.pt)."""
    cfg = OmegaConf.load(quickstart_run / ".hydra" / "config.yaml")
    assert cfg.trainer.log_retrievals
    best_epoch = json.loads((quickstart_run / "metrics.json").read_text())["best_epoch"]
    best = next(record for record in read_jsonl(quickstart_run / "history.jsonl") if record["epoch"] == best_epoch)
    drawn = images(tensorboard_dir(quickstart_run))
    k, rows = cfg.retrievals.k, cfg.retrievals.queries
    for tag in ("retrievals/sample", "retrievals/worst"):  # each new best drawn, the best one last
        assert drawn[tag][-1].step == best["step"]
        assert {(e.width, e.height) for e in drawn[tag]} == {((1 + k) * TILE_WIDTH, rows * TILE_HEIGHT)}
    embedding, vectors, metadata = read_projector(tensorboard_dir(quickstart_run))
    test_set = RetrievalDataset(ROOT / cfg.dataset.root, cfg.dataset.query_split,
                                instantiate(cfg.dataset.test_transform))
    assert len(metadata) == min(cfg.projector.max_points, len(test_set))
    chosen = [test_set.paths.index(path) for _, path in metadata]
    assert [int(label) for label, _ in metadata] == [test_set.labels[i] for i in chosen]
    model = instantiate(cfg.model)
    model.load_state_dict(torch.load(quickstart_run / "checkpoints" / "best.pt", weights_only=False)["model"])
    embeddings, _ = extract_embeddings(model, make_loader(test_set, 256, num_workers=0), torch.device("cpu"),
                                       progress=False)
    expected = torch.nn.functional.normalize(embeddings[chosen], dim=1).numpy()
    assert vectors == pytest.approx(expected, abs=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_embeddings_on_the_gpu_give_the_same_pictures(loo):
    dataset, evaluation = loo
    on_gpu = Evaluation(evaluation.metrics, {name: value.cuda() for name, value in evaluation.embeddings.items()},
                        evaluation.per_query)
    queries, settings = np.arange(20), GridSettings(k=5)
    for gpu, cpu in zip(retrieval_rows(on_gpu, queries, settings), retrieval_rows(evaluation, queries, settings)):
        assert (gpu.query, gpu.ap, gpu.neighbors, gpu.same_class) == (cpu.query, cpu.ap, cpu.neighbors, cpu.same_class)
        assert gpu.scores == pytest.approx(cpu.scores, abs=1e-6)
    assert retrieval_grids(on_gpu, dataset, None, settings)["worst"].size == (6 * TILE_WIDTH, 8 * TILE_HEIGHT)
    projector = Projector({"query": dataset}, max_points=9, seed=0)
    assert torch.equal(projector.points(on_gpu), projector.points(evaluation))
