"""``python -m dml_bench.evaluate`` reproduces the trainer's numbers from a checkpoint. The entry
point's function runs in this process; the one-line error runs the command itself."""

import json

import numpy as np
import pytest

from dml_bench.evaluate import evaluate
from tests.helpers.runs import exit_code, hydra_job, run_module


def run_evaluate(tmp_path, *args: str) -> int:
    """``python -m dml_bench.evaluate ARGS trainer.progress=false``'s exit status, run in this process."""
    with hydra_job([*args, "trainer.progress=false"], config_name="evaluate", output_dir=tmp_path / "evaluate") as cfg:
        return exit_code(evaluate, cfg)


def test_evaluating_best_checkpoint_gives_the_runs_metrics(quickstart_run, tmp_path, capsys):
    checkpoint = quickstart_run / "checkpoints" / "best.pt"
    assert run_evaluate(tmp_path, f"checkpoint={checkpoint}", "save_embeddings=true") == 0
    assert "| recall@1 " in capsys.readouterr().out
    evaluated = json.loads((checkpoint.parent / "eval_metrics.json").read_text())["metrics"]
    trained = json.loads((quickstart_run / "metrics.json").read_text())["metrics"]
    assert evaluated.keys() == trained.keys()
    for name, value in trained.items():
        assert evaluated[name] == pytest.approx(value, abs=1e-6), name
    embeddings = np.load(checkpoint.parent / "embeddings" / "query.npy")
    labels = np.load(checkpoint.parent / "embeddings" / "query_labels.npy")
    assert embeddings.shape == (len(labels), 128) and embeddings.dtype == np.float32


def test_command_line_overrides_replace_the_saved_config(quickstart_run, tmp_path):
    checkpoint = quickstart_run / "checkpoints" / "last.pt"
    assert run_evaluate(tmp_path, f"checkpoint={checkpoint}", "evaluation.recall_ks=[1,16]") == 0
    metrics = json.loads((checkpoint.parent / "eval_metrics.json").read_text())["metrics"]
    assert {"recall@1", "recall@16"} <= set(metrics) and "recall@2" not in metrics


def test_missing_checkpoint_is_a_one_line_error(tmp_path):
    result = run_module("dml_bench.evaluate", f"checkpoint={tmp_path / 'nope.pt'}", "trainer.progress=false",
                        f"hydra.run.dir={tmp_path / 'evaluate'}", check=False)
    assert result.returncode == 1
    assert "nope.pt does not exist" in result.stderr and "Traceback" not in result.stderr
