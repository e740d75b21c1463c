"""The objects of a run, built from a composed config by ``dml_bench.builders`` as
``dml_bench.train.train`` builds them, up to the Trainer; one training step taken by the real
Trainer; and the tiny prepared datasets they can be built on."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image
from torch.utils.data import DataLoader

from dml_bench import builders
from dml_bench.engine.trainer import Trainer, TrainerSettings
from dml_bench.evaluation.evaluator import RetrievalEvaluator
from dml_bench.runtime.distributed import World

CPU = torch.device("cpu")

# The tiny benchmark folders' splits: (class ids, images per class) of each split file.
TINY_SPLITS = {
    "train": ((1, 2, 3, 4, 5, 6), 4),
    "test": ((101, 102), 4),
    "query": ((101, 102), 2),
    "gallery": ((101, 102), 2),
    "test_large": ((101, 102), 4),  # VehicleID's default test set
}
DATASET_FOLDERS = ("glyphs", "cub200", "cars196", "sop", "inshop", "inaturalist", "vehicleid", "csv")


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
    model = builders.build_model(cfg, CPU, World())
    loss, param_lr = builders.build_loss(cfg, num_classes, model.embedding_size)
    miner = builders.build_miner(cfg, loss)
    return model, loss, param_lr, miner, builders.build_optimizer(cfg, model, loss, param_lr)


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
    datasets = builders.build_datasets(cfg)
    train_loader = builders.build_train_loader(cfg, datasets["train"], CPU, World())
    eval_loaders = builders.build_eval_loaders(cfg, datasets, CPU)
    model, loss, param_lr, miner, optimizer = build_model_and_loss(cfg, datasets["train"].num_classes)
    scheduler = builders.build_scheduler(cfg, optimizer, len(train_loader))
    evaluator, test_evaluator = builders.build_evaluators(cfg, eval_loaders)
    return RunObjects(datasets, train_loader.sampler, train_loader, model, loss, param_lr, miner, optimizer,
                      scheduler, evaluator, test_evaluator)


def train_step(run: RunObjects, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of the real Trainer on CPU in fp32 (embed, mine, loss, backward, step, schedule);
    returns the loss and the embeddings the step computed."""
    trainer = Trainer(run.model, run.loss, run.optimizer, run.train_loader, run.evaluator,
                      TrainerSettings(run_dir=Path("unused"), epochs=1, progress=False),
                      miner=run.miner, scheduler=run.scheduler)
    seen = []
    hook = run.model.register_forward_hook(lambda module, args, output: seen.append(output.detach()))
    run.model.train()
    run.loss.train()
    try:
        value = trainer.train_step(images, targets)
    finally:
        hook.remove()
    return value, seen[0].float()
