"""``python -m dml_bench.evaluate`` reproduces the trainer's numbers from a checkpoint."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT


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
