"""``python -m dml_bench.evaluate`` reproduces the trainer's numbers from a checkpoint. The entry
point's function runs in this process; the one-line error runs the command itself."""

import json
import logging
import shutil

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from dml_bench.data.retrieval_dataset import RetrievalDataset
from dml_bench.evaluate import evaluate
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
from tests.helpers.config import ROOT
from tests.helpers.runs import exit_code, hydra_job, run_module


def run_evaluate(tmp_path, *args: str) -> int:
    """``python -m dml_bench.evaluate ARGS trainer.progress=false``'s exit status, run in this process."""
    with hydra_job([*args, "trainer.progress=false"], config_name="evaluate", output_dir=tmp_path / "evaluate") as cfg:
        return exit_code(evaluate, cfg)


def test_evaluating_best_checkpoint_gives_the_runs_metrics(quickstart_run, tmp_path, capsys):
    checkpoint = quickstart_run / "checkpoints" / "best.pt"
    assert run_evaluate(tmp_path, f"checkpoint={checkpoint}", "save_embeddings=true") == 0
    assert "| recall@1 " in capsys.readouterr().out
    evaluated = json.loads((checkpoint.parent / "best_eval_metrics.json").read_text())["metrics"]
    trained = json.loads((quickstart_run / "metrics.json").read_text())["metrics"]
    assert evaluated.keys() == trained.keys()
    for name, value in trained.items():
        assert evaluated[name] == pytest.approx(value, abs=1e-6), name
    embeddings = np.load(checkpoint.parent / "embeddings" / "best_query.npy")
    labels = np.load(checkpoint.parent / "embeddings" / "best_query_labels.npy")
    assert embeddings.shape == (len(labels), 128) and embeddings.dtype == np.float32


def test_visualize_draws_the_retrieval_grids_next_to_the_checkpoint(quickstart_run, tmp_path):
    checkpoint = quickstart_run / "checkpoints" / "best.pt"
    assert run_evaluate(tmp_path, f"checkpoint={checkpoint}", "visualize=true", "retrievals.k=5",
                        "retrievals.queries=3", "save_embeddings=true") == 0
    # The worst queries by AP@R and their nearest, from a float64 brute force on the saved embeddings.
    embeddings = np.load(checkpoint.parent / "embeddings" / "best_query.npy").astype(np.float64)
    labels = np.load(checkpoint.parent / "embeddings" / "best_query_labels.npy")
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



def test_command_line_overrides_replace_the_saved_config(quickstart_run, tmp_path):
    checkpoint = quickstart_run / "checkpoints" / "last.pt"
    assert run_evaluate(tmp_path, f"checkpoint={checkpoint}", "evaluation.recall_ks=[1,16]") == 0
    metrics = json.loads((checkpoint.parent / "last_eval_metrics.json").read_text())["metrics"]
    assert {"recall@1", "recall@16"} <= set(metrics) and "recall@2" not in metrics


def test_a_checkpoint_saved_before_newer_settings_evaluates_with_their_defaults(quickstart_run, tmp_path):
    state = torch.load(quickstart_run / "checkpoints" / "best.pt", weights_only=False)
    for block, key in (("evaluation", "exclude"), ("evaluation", "euclidean_recall"), ("trainer", "tf32")):
        del state["config"][block][key]  # as a run of an earlier dml_bench saved it
    checkpoint = tmp_path / "run" / "checkpoints" / "best.pt"
    checkpoint.parent.mkdir(parents=True)
    torch.save(state, checkpoint)
    assert run_evaluate(tmp_path, f"checkpoint={checkpoint}") == 0
    evaluated = json.loads((checkpoint.parent / "best_eval_metrics.json").read_text())["metrics"]
    assert evaluated == pytest.approx(json.loads((quickstart_run / "metrics.json").read_text())["metrics"], abs=1e-6)


def test_each_checkpoint_keeps_its_own_outputs(quickstart_run, tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    for name in ("best.pt", "last.pt"):
        shutil.copy(quickstart_run / "checkpoints" / name, run / "checkpoints")
    written = {}
    for name in ("best", "last"):
        checkpoint = run / "checkpoints" / f"{name}.pt"
        assert run_evaluate(tmp_path, f"checkpoint={checkpoint}", "save_embeddings=true", "visualize=true") == 0
        written[name] = {path.relative_to(run): path.read_bytes() for path in run.rglob("*") if path.is_file()}
    outputs = ["checkpoints/{}_eval_metrics.json", "checkpoints/embeddings/{}_query.npy",
               "checkpoints/embeddings/{}_query_labels.npy", "checkpoints/retrievals/{}_sample.png",
               "checkpoints/retrievals/{}_worst.png"]
    new = sorted(str(path) for path in set(written["last"]) - set(written["best"]))
    assert new == sorted(output.format("last") for output in outputs)
    assert all(written["last"][path] == content for path, content in written["best"].items())  # best's kept
    for name in ("best", "last"):
        saved = json.loads((run / "checkpoints" / f"{name}_eval_metrics.json").read_text())
        assert saved["checkpoint"] == str(run / "checkpoints" / f"{name}.pt")
        assert saved["epoch"] == torch.load(run / "checkpoints" / f"{name}.pt", weights_only=False)["epoch"]


def test_a_run_folder_evaluates_its_best_checkpoint(quickstart_run, tmp_path, caplog):
    run = tmp_path / "run"
    shutil.copytree(quickstart_run, run)
    caplog.set_level(logging.INFO, logger="dml_bench")
    assert run_evaluate(tmp_path, f"checkpoint={run}") == 0
    assert f"checkpoint={run} is a run folder: evaluating its {run / 'checkpoints' / 'best.pt'}" in caplog.messages
    saved = json.loads((run / "checkpoints" / "best_eval_metrics.json").read_text())
    assert saved["checkpoint"] == str(run / "checkpoints" / "best.pt")


def test_a_folder_without_a_best_checkpoint_says_what_to_give(tmp_path, capsys):
    assert run_evaluate(tmp_path, f"checkpoint={tmp_path}") == 1
    stderr = capsys.readouterr().err
    assert (f"checkpoint={tmp_path} is a folder but no run folder with a checkpoint: "
            f"{tmp_path / 'checkpoints' / 'best.pt'} does not exist; give a run folder") in stderr
    assert "Traceback" not in stderr


def test_missing_checkpoint_is_a_one_line_error(tmp_path):
    result = run_module("dml_bench.evaluate", f"checkpoint={tmp_path / 'nope.pt'}", "trainer.progress=false",
                        f"hydra.run.dir={tmp_path / 'evaluate'}", check=False)
    assert result.returncode == 1
    assert "nope.pt does not exist" in result.stderr and "Traceback" not in result.stderr
