"""The "concatenated" figure of a cross-validation (Musgrave et al., "A Metric Learning Reality
Check", ECCV 2020): the K fold models of one configuration embed each test image, their K
embeddings, each L2-normalised, are concatenated into one K x d embedding, and the test split is
evaluated once on those. ``scripts/collect_results.py --concatenated`` prints it per
configuration (and seed) of ``protocol=cross_validation`` runs, beside the mean over the folds.
"""

from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from dml_bench import builders
from dml_bench.comparison.aggregate import grouped
from dml_bench.comparison.runs import FOLD, SEED, metric_columns, read_runs
from dml_bench.engine.checkpoint import load_checkpoint
from dml_bench.evaluation.evaluator import Evaluation
from dml_bench.runtime.device import resolve_amp, resolve_device
from dml_bench.runtime.errors import UserError
from dml_bench.runtime.tables import markdown_table
from dml_bench.runtime.trusted_targets import check_targets

CAPTION = ("Concatenated: per configuration and seed, the test split evaluated once on the K fold models' "
           "embeddings of each image, each L2-normalised, concatenated (K x d); the mean over the folds is above")


class Concatenation(nn.Module):
    """The models' L2-normalised embeddings of each image side by side: under cosine distance the
    similarity of two images is then the mean of the models' cosine similarities."""

    def __init__(self, models: list[nn.Module]):
        super().__init__()
        self.models = nn.ModuleList(models)
        self.embedding_size = sum(model.embedding_size for model in models)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.normalize(model(images).float(), dim=1) for model in self.models], dim=1)


def evaluate_concatenated(checkpoints: list[Path], trusted=()) -> Evaluation:
    """The test split evaluated once with the models of ``checkpoints`` concatenated. The data,
    evaluation settings and device are the first checkpoint's config, which the others must share;
    a ``_target_`` in their configs must be named by configs/ or ``trusted`` (``--trust-target``)."""
    states = [load_checkpoint(path) for path in checkpoints]
    for path, state in zip(checkpoints, states):
        check_targets(state["config"], f"the checkpoint {path}", trusted, lambda names: f"add --trust-target {names}")
    configs = [OmegaConf.create(state["config"]) for state in states]
    cfg = configs[0]
    for path, other in zip(checkpoints[1:], configs[1:]):
        if other.dataset != cfg.dataset or other.evaluation != cfg.evaluation:
            raise UserError(f"{path} was trained on other data or evaluates otherwise than {checkpoints[0]} "
                            "(dataset.* or evaluation.* differ): only folds of one configuration are concatenated.")
    device = resolve_device(cfg.trainer.device)
    _, evaluator = builders.build_test_evaluator(cfg, device)
    models = [builders.build_trained_model(c.model, state["model"]) for c, state in zip(configs, states)]
    return evaluator(Concatenation(models).to(device), device, resolve_amp(cfg.trainer.amp, device))


def fold_sets(records: list[dict]) -> tuple[list[str], list[tuple[dict, str | None, dict[int, dict], int]]]:
    """The completed runs with a ``protocol.fold`` override by configuration and seed: (override
    keys, [(config, seed, {fold: [runs]}, K = their protocol.folds)])."""
    keys, groups = grouped(records)
    sets = []
    for values, runs in groups.items():
        by_seed: dict[str | None, list[dict]] = {}
        for run in runs:
            if FOLD in run["overrides"]:
                by_seed.setdefault(run["overrides"].get(SEED), []).append(run)
        for seed, fold_runs in by_seed.items():
            folds = OmegaConf.load(Path(fold_runs[0]["run"]) / ".hydra" / "config.yaml").protocol.folds
            by_fold = {}
            for run in fold_runs:
                if run["status"] != "failed":
                    by_fold.setdefault(int(run["overrides"][FOLD]), []).append(run)
            sets.append((dict(zip(keys, values)), seed, by_fold, folds))
    return keys, sets


def missing_folds(by_fold: dict[int, list[dict]], folds: int) -> str | None:
    """Why a set of fold runs cannot be concatenated, or None."""
    missing = [str(f) for f in range(folds) if f not in by_fold]
    if missing:
        return f"no completed run of fold {', '.join(missing)} (of protocol.folds={folds})"
    twice = [str(f) for f, runs in sorted(by_fold.items()) if len(runs) > 1]
    if twice:
        return f"several runs of fold {', '.join(twice)}: collect one of each"
    return None


def concatenated_table(paths: list[str | Path], trusted=()) -> tuple[str, list[str], list[list]]:
    """Markdown (caption and table) and CSV headers and rows: one row per configuration and seed
    of fold runs, with its concatenated test metrics (or why there are none); ``trusted``: the
    targets accepted in the checkpoints' configs besides those of configs/."""
    records = read_runs(paths)
    keys, sets = fold_sets(records)
    if not sets:
        raise UserError("--concatenated: none of these runs has a protocol.fold override; run the folds with "
                        "-m protocol=cross_validation 'protocol.fold=range(4)'")
    names = metric_columns(records)
    show_seed = any(seed is not None for _, seed, _, _ in sets)
    rows = []
    for config, seed, by_fold, folds in sets:
        problem = missing_folds(by_fold, folds)
        metrics = {}
        if problem is None:
            checkpoints = [Path(by_fold[f][0]["run"]) / "checkpoints" / "best.pt" for f in range(folds)]
            metrics = evaluate_concatenated(checkpoints, trusted).metrics
        rows.append([*(config[k] for k in keys), *([seed or ""] if show_seed else []), folds,
                     *(metrics.get(m) for m in names), problem or "completed"])
    headers = [*keys, *(["seed"] if show_seed else []), "folds", *names, "status"]
    return f"{CAPTION}:\n{markdown_table(headers, rows)}", headers, rows
