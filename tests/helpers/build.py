"""The objects of a run, built from a composed config as ``dml_bench.train.train`` builds them (its
own builders where it has them, its few inline lines mirrored where it has none), up to the
Trainer; and the tiny prepared datasets they can be built on."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from PIL import Image
from torch.utils.data import DataLoader

from dml_bench.data.loaders import SeededSamples, make_loader
from dml_bench.data.validation import class_disjoint_split
from dml_bench.engine.optim import param_groups
from dml_bench.evaluation.evaluator import RetrievalEvaluator
from dml_bench.train import build_datasets, build_evaluator, build_loss, build_miner

# The tiny benchmark folders' splits: (class ids, images per class) of each split file.
TINY_SPLITS = {
    "train": ((1, 2, 3, 4, 5, 6), 4),
    "test": ((101, 102), 4),
    "query": ((101, 102), 2),
    "gallery": ((101, 102), 2),
}
DATASET_FOLDERS = ("glyphs", "cub200", "cars196", "sop", "inshop", "csv")


def write_tiny_benchmark(root: Path) -> Path:
    """A prepared folder in the standard layout (``splits/<split>.csv`` with ``path,label``) of
    small RGB PNGs, with every split a dataset config may name (see ``TINY_SPLITS``)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "splits").mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for split, (classes, per_class) in TINY_SPLITS.items():
        lines = ["path,label"]
        for label in classes:
            for k in range(per_class):
                path = f"images/{split}_{label}_{k}.png"
                Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(root / path)
                lines.append(f"{path},{label}")
        (root / "splits" / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return root


def write_tiny_data_dir(folder: Path) -> Path:
    """A ``data_dir`` where every dataset config finds a tiny prepared copy (``write_tiny_benchmark``)
    under its name."""
    for name in DATASET_FOLDERS:
        write_tiny_benchmark(folder / name)
    return folder


def build_model_and_loss(cfg: DictConfig, num_classes: int):
    """model, loss, the loss's parameter lr, miner and optimizer, as train.py builds them."""
    model = instantiate(cfg.model)
    loss, param_lr = build_loss(cfg, num_classes, model.embedding_size)
    miner = build_miner(cfg, loss)
    optimizer = instantiate(cfg.optimizer)(param_groups(model, loss, cfg.optimizer.weight_decay, param_lr))
    return model, loss, param_lr, miner, optimizer


def build_scheduler(cfg: DictConfig, optimizer, total_iters: int):
    if cfg.scheduler and cfg.scheduler.get("_target_"):
        return instantiate(cfg.scheduler, optimizer=optimizer, total_iters=max(1, total_iters))
    return None


@dataclass
class RunObjects:
    datasets: dict
    sampler: object
    train_loader: DataLoader
    model: torch.nn.Module
    loss: torch.nn.Module
    param_lr: float | None
    miner: object
    optimizer: torch.optim.Optimizer
    scheduler: object
    evaluator: RetrievalEvaluator
    test_evaluator: RetrievalEvaluator


def build_run(cfg: DictConfig) -> RunObjects:
    """Everything ``train`` builds for a single CPU process before it builds the Trainer."""
    datasets = build_datasets(cfg)
    if cfg.protocol.validation_fraction:
        datasets["train"], datasets["validation"] = class_disjoint_split(
            datasets["train"], cfg.protocol.validation_fraction, cfg.protocol.split_seed,
            instantiate(cfg.dataset.test_transform))
    train_set = datasets["train"]
    loader_options = dict(num_workers=cfg.trainer.num_workers, seed=cfg.seed)
    sampler = instantiate(cfg.sampler)(labels=train_set.targets, batch_size=cfg.trainer.batch_size, seed=cfg.seed,
                                       num_replicas=1, rank=0)
    train_loader = make_loader(SeededSamples(train_set), cfg.trainer.batch_size, sampler=sampler, drop_last=True,
                               **loader_options)
    eval_loaders = {role: make_loader(datasets[role], cfg.evaluation.batch_size, **loader_options)
                    for role in ("query", "gallery", "validation") if role in datasets}
    model, loss, param_lr, miner, optimizer = build_model_and_loss(cfg, train_set.num_classes)
    scheduler = build_scheduler(cfg, optimizer, cfg.trainer.epochs * len(train_loader))
    test_evaluator = build_evaluator(cfg, eval_loaders["query"], eval_loaders.get("gallery"))
    evaluator = build_evaluator(cfg, eval_loaders["validation"]) if "validation" in eval_loaders else test_evaluator
    return RunObjects(datasets, sampler, train_loader, model, loss, param_lr, miner, optimizer, scheduler, evaluator,
                      test_evaluator)


def train_step(run: RunObjects, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One step as the Trainer takes it on CPU in fp32: embed, mine, loss, backward, step; returns
    the loss and the embeddings."""
    run.model.train()
    run.loss.train()
    embeddings = run.model(images).float()
    indices_tuple = run.miner(embeddings, targets) if run.miner is not None else None
    value = run.loss(embeddings, targets, indices_tuple)
    run.optimizer.zero_grad(set_to_none=True)
    value.backward()
    run.optimizer.step()
    if run.scheduler is not None:
        run.scheduler.step()
    return value.detach(), embeddings.detach()
