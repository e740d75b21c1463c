"""protocol=rigorous or cross_validation, last step: the checkpoint selected on validation,
evaluated once on test."""

import logging
from pathlib import Path

import torch
from torch import nn

from dml_bench.engine import checkpoint as ckpt
from dml_bench.engine.recorders import Recorder
from dml_bench.evaluation.metric_names import NUM_QUERIES
from dml_bench.runtime.distributed import SINGLE_PROCESS, World, wait_for_all
from dml_bench.runtime.tables import markdown_table

log = logging.getLogger(__name__)


def test_selected_checkpoint(model: nn.Module, evaluator, run_dir: Path, device: torch.device,
                             amp_dtype: torch.dtype | None, summary: dict, recorder: Recorder,
                             world: World = SINGLE_PROCESS) -> dict:
    """Load ``run_dir/checkpoints/best.pt`` into ``model``, evaluate the test split with
    ``evaluator`` and record the completed summary (metrics.json): ``metrics`` become the test
    metrics of the selected epoch and the validation metrics that selected it move to
    ``validation_metrics``. Under DDP every rank embeds its shard; rank 0 alone has the metrics
    and records them (the others return ``summary`` as it was)."""
    wait_for_all(world)  # until rank 0 has written best.pt
    state = ckpt.load_checkpoint(run_dir / "checkpoints" / "best.pt", map_location=device)
    model.load_state_dict(state["model"])
    evaluation = evaluator(model, device, amp_dtype)
    if evaluation is None:
        return summary
    metrics = evaluation.metrics
    recorder.selected(state["epoch"], evaluation)
    summary = {**summary, "metrics": metrics, "validation_metrics": summary["metrics"]}
    recorder.summary(summary)
    names = [name for name in metrics if name != NUM_QUERIES]
    rows = [[f"{split} (epoch {state['epoch']})", *(values[name] for name in names)]
            for split, values in (("validation", summary["validation_metrics"]), ("test", metrics))]
    print("\n" + markdown_table(["selected checkpoint", *names], rows))
    log.info("test split, epoch %d selected on validation: %s", state["epoch"],
             ", ".join(f"{name} {metrics[name]:.4f}" for name in names))
    return summary
