"""``python -m dml_bench.evaluate`` reproduces the trainer's numbers from a checkpoint."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT
from omegaconf import OmegaConf
from PIL import Image

from dml_bench.data.retrieval_dataset import RetrievalDataset
from dml_bench.visualize.retrievals import (
    FRAME,
    MARGIN,
    OTHER_CLASS,
    PICTURE,
    QUERY,
    SAME_CLASS,
    TILE_HEIGHT,
    TILE_WIDTH,
)
from dml_bench.visualize.thumbnails import thumbnail


def run_evaluate(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "dml_bench.evaluate", *args, "trainer.progress=false",
                           "hydra.run.dir=" + str(ROOT / "outputs" / "evaluate-tests")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_evaluating_best_checkpoint_gives_the_runs_metrics(quickstart_run):
    checkpoint = quickstart_run / "checkpoints" / "best.pt"
    result = run_evaluate(f"checkpoint={checkpoint}", "save_embeddings=true")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| recall@1 " in result.stdout
    evaluated = json.loads((checkpoint.parent / "eval_metrics.json").read_text())["metrics"]
    trained = json.loads((quickstart_run / "metrics.json").read_text())["metrics"]
    assert evaluated.keys() == trained.keys()
    for name, value in trained.items():
        assert evaluated[name] == pytest.approx(value, abs=1e-6), name
    embeddings = np.load(checkpoint.parent / "embeddings" / "query.npy")
    labels = np.load(checkpoint.parent / "embeddings" / "query_labels.npy")
    assert embeddings.shape == (len(labels), 128) and embeddings.dtype == np.float32


def test_visualize_draws_the_retrieval_grids_next_to_the_checkpoint(quickstart_run):
    checkpoint = quickstart_run / "checkpoints" / "best.pt"
    result = run_evaluate(f"checkpoint={checkpoint}", "visualize=true", "retrievals.k=5", "retrievals.queries=3",
                          "save_embeddings=true")
    assert result.returncode == 0, result.stderr[-3000:]
    # The worst queries by AP@R and their nearest, from a float64 brute force on the saved embeddings.
    embeddings = np.load(checkpoint.parent / "embeddings" / "query.npy").astype(np.float64)
    labels = np.load(checkpoint.parent / "embeddings" / "query_labels.npy")
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    similarity = embeddings @ embeddings.T
    np.fill_diagonal(similarity, -np.inf)
    order = np.argsort(-similarity, axis=1, kind="stable")[:, :-1]  # the query itself is last
    same = labels[order] == labels[:, None]
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    r, rank = counts[inverse] - 1, np.arange(1, len(labels))
    relevant = same & (rank <= r[:, None])
    ap = (np.cumsum(relevant, axis=1) / rank * relevant).sum(1) / r
    worst = np.lexsort((np.arange(len(ap)), ap))[:3]

    grid = Image.open(checkpoint.parent / "retrievals" / "best_worst.png").convert("RGB")
    assert (checkpoint.parent / "retrievals" / "best_sample.png").is_file()
    assert grid.size == (6 * TILE_WIDTH, 3 * TILE_HEIGHT)
    cfg = OmegaConf.load(quickstart_run / ".hydra" / "config.yaml")
    test_set = RetrievalDataset(ROOT / cfg.dataset.root, cfg.dataset.query_split)
    for row, query in enumerate(worst):
        tiles = [(column * TILE_WIDTH + MARGIN, row * TILE_HEIGHT + MARGIN) for column in range(6)]
        frames = [grid.getpixel((left + 1, top + 1)) for left, top in tiles]
        assert frames == [QUERY, *(SAME_CLASS if hit else OTHER_CLASS for hit in same[query, :5])]
        pictures = [np.asarray(grid.crop((left + FRAME, top + FRAME, left + FRAME + PICTURE, top + FRAME + PICTURE)))
                    for left, top in tiles]
        for picture, index in zip(pictures, [query, *order[query, :5]]):
            assert np.array_equal(picture, np.asarray(thumbnail(test_set, index, PICTURE)))


def test_command_line_overrides_replace_the_saved_config(quickstart_run):
    checkpoint = quickstart_run / "checkpoints" / "last.pt"
    result = run_evaluate(f"checkpoint={checkpoint}", "evaluation.recall_ks=[1,16]")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((checkpoint.parent / "eval_metrics.json").read_text())["metrics"]
    assert {"recall@1", "recall@16"} <= set(metrics) and "recall@2" not in metrics


def test_missing_checkpoint_is_a_one_line_error(tmp_path):
    result = run_evaluate(f"checkpoint={tmp_path / 'nope.pt'}")
    assert result.returncode == 1
    assert "nope.pt does not exist" in result.stderr and "Traceback" not in result.stderr
