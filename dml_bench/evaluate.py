"""Evaluate a checkpoint: ``python -m dml_bench.evaluate checkpoint=RUN_DIR/checkpoints/best.pt``
(or ``checkpoint=RUN_DIR``, for its best.pt).

The run's saved config decides the data, model and metrics; what the user types on the command
line replaces the matching parts. Embeds the test split(s) with the same builders and code the
trainer uses, prints the metrics table and writes ``<checkpoint name>_eval_metrics.json`` (with the
command's overrides and the whole config that produced the metrics; and,
with ``save_embeddings=true``, ``embeddings/<checkpoint name>_*.npy``; with ``visualize=true``,
the retrieval grids ``retrievals/<checkpoint name>_{sample,worst}.png``) next to the checkpoint,
each file atomically: a run still training there, or another evaluation of the same checkpoint,
never sees or leaves half a file. A ``_target_`` in the checkpoint's config that configs/ does not
name is refused unless the command names it (``trust_targets=[...]``).
"""

import io
import logging

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from dml_bench import builders
from dml_bench.config_checks import check_config, warn_unused_plugins
from dml_bench.engine.checkpoint import load_checkpoint
from dml_bench.evaluation.metric_names import NUM_QUERIES
from dml_bench.runtime import run_folder
from dml_bench.runtime.device import resolve_amp, resolve_device, set_tf32
from dml_bench.runtime.entry import report_user_errors, seed_everything
from dml_bench.runtime.errors import UserError
from dml_bench.runtime.evaluated_files import checkpoint_file, output_name
from dml_bench.runtime.files import atomic_write_bytes, write_json
from dml_bench.runtime.tables import markdown_table
from dml_bench.runtime.trusted_targets import check_targets, command_line_targets
from dml_bench.visualize.retrievals import GridSettings, retrieval_grids

log = logging.getLogger("dml_bench.evaluate")


# Blocks of plain settings whose keys added since a run was saved take their defaults (a run saved
# before ``evaluation.exclude`` existed evaluates with the default), the run's own values kept.
SETTINGS_BLOCKS = ("evaluation", "trainer")


def run_config(saved: dict, composed: DictConfig, typed_overrides: list[str]) -> DictConfig:
    """The saved run config with the user's command-line overrides applied on top."""
    cfg = OmegaConf.create(saved)
    for block in SETTINGS_BLOCKS:
        cfg[block] = OmegaConf.merge(composed[block], cfg.get(block) or {})
    for override in typed_overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        value = OmegaConf.select(composed, key)
        OmegaConf.update(cfg, key, OmegaConf.to_container(value) if OmegaConf.is_config(value) else value,
                         merge=False, force_add=True)
    return cfg


def check_finite(weights: dict, checkpoint) -> None:
    """Refuse weights with NaN or Inf (a checkpoint that dml_bench did not write: its trainer never
    saves them), naming the checkpoint, rather than fail inside the metrics."""
    bad = [name for name, tensor in weights.items()
           if torch.is_tensor(tensor) and tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if bad:
        raise UserError(f"The checkpoint {checkpoint} holds non-finite weights (NaN or Inf) in {len(bad)} of its "
                        f"tensors, e.g. {bad[0]}, so its embeddings and metrics would be meaningless. dml_bench's "
                        "trainer never writes such a checkpoint: evaluate another checkpoint of the run (its "
                        "best.pt), or copy this one again if it was copied.")


def evaluate(cfg: DictConfig) -> dict:
    check_config(cfg)  # what the user typed; the run's own values passed it when it trained
    warn_unused_plugins()
    checkpoint = checkpoint_file(cfg.checkpoint)
    state = load_checkpoint(checkpoint)
    save_embeddings, visualize, retrievals = cfg.save_embeddings, cfg.visualize, cfg.retrievals
    typed = HydraConfig.get().overrides.task
    trusted = command_line_targets(typed, cfg.trust_targets)
    cfg = run_config(state["config"], cfg, typed)
    check_targets(OmegaConf.to_container(cfg, resolve=False), f"the checkpoint {checkpoint}", trusted,
                  lambda names: f"add trust_targets=[{names}] to the command")
    check_finite(state["model"], checkpoint)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.trainer.device)
    amp_dtype = resolve_amp(cfg.trainer.amp, device)
    set_tf32(cfg.trainer.tf32)  # the run's arithmetic (runs saved before the option: the default, fp32)
    datasets, evaluator = builders.build_test_evaluator(cfg, device)
    model = builders.build_trained_model(cfg.model, state["model"]).to(device)
    evaluation = evaluator(model, device, amp_dtype)
    metrics = evaluation.metrics
    out_dir = checkpoint.parent
    metrics_file = out_dir / output_name(checkpoint, "eval_metrics.json")
    write_json(metrics_file, {"checkpoint": str(checkpoint), "epoch": state["epoch"], "dataset": cfg.dataset.name,
                              "metrics": metrics, "overrides": list(typed),
                              "config": OmegaConf.to_container(cfg, resolve=True)})
    if save_embeddings:
        (out_dir / "embeddings").mkdir(exist_ok=True)
        for name, values in evaluation.embeddings.items():
            buffer = io.BytesIO()
            np.save(buffer, values.cpu().numpy())
            atomic_write_bytes(out_dir / "embeddings" / output_name(checkpoint, f"{name}.npy"), buffer.getbuffer())
    if visualize:
        grids = retrieval_grids(evaluation, datasets["query"], datasets.get("gallery"),
                                GridSettings.of(cfg, retrievals))
        (out_dir / "retrievals").mkdir(exist_ok=True)
        for name, grid in grids.items():
            buffer = io.BytesIO()
            grid.save(buffer, format="PNG")
            atomic_write_bytes(out_dir / "retrievals" / output_name(checkpoint, f"{name}.png"), buffer.getbuffer())
    names = [k for k in metrics if k != NUM_QUERIES]
    print(markdown_table(["checkpoint", *names, NUM_QUERIES],
                         [[f"{checkpoint.name} (epoch {state['epoch']})", *(metrics[k] for k in names),
                           metrics[NUM_QUERIES]]]))
    print(f"\nwritten: {metrics_file}" + (f", {out_dir / 'retrievals'}/" if visualize else ""))
    return metrics


@hydra.main(version_base="1.3", config_path="../configs", config_name="evaluate")
def _main(cfg: DictConfig) -> None:
    report_user_errors(evaluate, cfg)


def main() -> None:
    run_folder.register()  # configs/evaluate.yaml extends train.yaml, which uses these resolvers
    _main()


if __name__ == "__main__":
    main()
