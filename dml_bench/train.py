"""Train an embedding: ``python -m dml_bench.train [experiment=NAME] [overrides...]``.

Reads top to bottom in the order data flows: config -> data -> model -> loss (+ miner) ->
optimizer + schedule -> Trainer.fit -> metrics. Every object is built here and injected.
"""

import logging
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from dml_bench.data.loaders import SeededSamples, make_loader
from dml_bench.data.splits import open_split
from dml_bench.data.validation import class_disjoint_split
from dml_bench.engine import distributed
from dml_bench.engine.final_test import test_selected_checkpoint
from dml_bench.engine.optim import param_groups
from dml_bench.engine.resume import resume_checkpoint
from dml_bench.engine.run_files import run_info, write_json
from dml_bench.engine.trainer import Trainer
from dml_bench.errors import UserError
from dml_bench.evaluation.evaluator import RetrievalEvaluator
from dml_bench.evaluation.mi_terms import mi_terms
from dml_bench.losses.compat import check_miner
from dml_bench.utils import (
    report_user_errors,
    resolve_amp,
    resolve_device,
    seed_everything,
    set_deterministic,
)

log = logging.getLogger("dml_bench.train")


def build_datasets(cfg: DictConfig) -> dict:
    """The training split and the evaluation split(s); prepares the embedded data on first use."""
    data = cfg.dataset
    if data.get("prepare") and not (Path(data.root) / "splits" / f"{data.train_split}.csv").exists():
        log.info("preparing %s under %s", data.name, data.root)
        instantiate(data.prepare, root=data.root)
    splits = {"train": (data.train_split, data.train_transform), "query": (data.query_split, data.test_transform)}
    if data.gallery_split:
        splits["gallery"] = (data.gallery_split, data.test_transform)
    if data.get("cache") and any(transform.get("resize") is None for _, transform in splits.values()):
        raise UserError("dataset.cache=true needs a resize in dataset.train_transform and dataset.test_transform "
                        "(the cache stores images as that Resize makes them); set dataset.cache=false.")
    return {role: open_split(data.name, data.root, split, instantiate(transform),
                             transform.resize if data.get("cache") else None)
            for role, (split, transform) in splits.items()}


def build_loss(cfg: DictConfig, num_classes: int, embedding_size: int) -> tuple[torch.nn.Module, float | None]:
    """Instantiate the loss, filling ``num_classes``/``embedding_size`` where its config asks.

    Also returns the learning rate of the loss's own parameters: ``loss.param_lr_mult`` times
    ``optimizer.lr`` (None when the key is missing or null: the optimizer's lr). A multiplier, because published
    recipes state it so (proxies 100x faster) and it stays right when optimizer.lr changes.
    """
    options = OmegaConf.to_container(cfg.loss, resolve=False)
    lr_mult = options.pop("param_lr_mult", None)
    if lr_mult is not None and not (isinstance(lr_mult, int | float) and lr_mult > 0):
        raise UserError(f"loss.param_lr_mult={lr_mult} must be a positive number (the loss parameters' "
                        "lr is param_lr_mult x optimizer.lr); e.g. loss.param_lr_mult=1.0.")
    filled = {key: value for key, value in (("num_classes", num_classes), ("embedding_size", embedding_size))
              if key in options}
    param_lr = None if lr_mult is None else lr_mult * cfg.optimizer.lr
    return instantiate(OmegaConf.create(options), **filled), param_lr


def build_miner(cfg: DictConfig, loss: torch.nn.Module):
    if not cfg.miner or cfg.miner.get("_target_") is None:
        return None
    miner = instantiate(cfg.miner)
    check_miner(loss, miner, cfg.loss._target_, cfg.miner._target_)
    return miner


def build_evaluator(cfg: DictConfig, query_loader, gallery_loader=None) -> RetrievalEvaluator:
    return RetrievalEvaluator(query_loader, gallery_loader, recall_ks=cfg.evaluation.recall_ks,
                              distance=cfg.evaluation.distance, backend=cfg.evaluation.backend,
                              progress=cfg.trainer.progress)


def build_world(cfg: DictConfig) -> distributed.World:
    """The ranks of this launch (torchrun, or a submitit job with several tasks), checked against
    the config: several processes need trainer=ddp, and the global batch must split evenly."""
    world = distributed.launcher_world()
    if world.size > 1 and not cfg.trainer.distributed:
        raise UserError(f"{world.size} processes were launched (WORLD_SIZE={world.size}) but trainer.distributed "
                        "is false: add trainer=ddp to train one model across them.")
    if cfg.trainer.batch_size % world.size:
        raise UserError(f"trainer.batch_size={cfg.trainer.batch_size} is the global batch and must split evenly "
                        f"over the {world.size} ranks; use a multiple of {world.size}.")
    distributed.init_distributed(world)
    distributed.rank_zero_logging(world)
    return world


def train(cfg: DictConfig) -> float:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    checkpoint = None
    if cfg.resume:
        checkpoint = resume_checkpoint(cfg.resume, run_dir, OmegaConf.to_container(cfg, resolve=False))
    world = build_world(cfg)
    seed_everything(cfg.seed)
    device = distributed.rank_device(resolve_device(cfg.trainer.device), world)
    deterministic = set_deterministic(cfg.trainer.deterministic, device)
    amp_dtype = resolve_amp(cfg.trainer.amp, device)
    if world.is_main:
        write_json(run_dir / "run_info.json", run_info(device, cfg.seed, world.size, deterministic))

    datasets = build_datasets(cfg)
    if cfg.protocol.validation_fraction:  # protocol=rigorous: select on held-out training classes
        datasets["train"], datasets["validation"] = class_disjoint_split(
            datasets["train"], cfg.protocol.validation_fraction, cfg.protocol.split_seed,
            instantiate(cfg.dataset.test_transform))
        log.info("validation split: %d of the training classes (%d images) held out",
                 datasets["validation"].num_classes, len(datasets["validation"]))
    train_set = datasets["train"]
    pin_memory = device.type == "cuda" if cfg.trainer.pin_memory == "auto" else cfg.trainer.pin_memory
    loader_options = dict(num_workers=cfg.trainer.num_workers, pin_memory=pin_memory, seed=cfg.seed)
    sampler = instantiate(cfg.sampler)(labels=train_set.targets, batch_size=cfg.trainer.batch_size, seed=cfg.seed,
                                       num_replicas=world.size, rank=world.rank)
    train_loader = make_loader(SeededSamples(train_set), cfg.trainer.batch_size // world.size, sampler=sampler,
                               drop_last=True, **loader_options)
    batch_size = cfg.trainer.batch_size
    log.info("epoch length: %d batches of %d = %d of the %d training images (%s)", len(train_loader),
             batch_size, len(train_loader) * batch_size, len(train_set), type(sampler).__name__)
    eval_loaders = {role: make_loader(datasets[role], cfg.evaluation.batch_size, **loader_options)
                    for role in ("query", "gallery", "validation") if role in datasets}

    memory_format = torch.channels_last if cfg.trainer.channels_last else torch.preserve_format
    model = instantiate(cfg.model).to(device, memory_format=memory_format)
    if cfg.trainer.compile:
        model.compile()  # in place: checkpoints keep the plain parameter names
    if world.size > 1:
        sync_batchnorm = cfg.trainer.sync_batchnorm
        if sync_batchnorm == "auto":  # BatchNorm frozen in eval mode has no batch statistics to sync
            sync_batchnorm = device.type == "cuda" and not cfg.model.get("freeze_bn", False)
        model = distributed.distribute_model(model, device, sync_batchnorm)
    loss, param_lr = build_loss(cfg, train_set.num_classes, distributed.unwrap(model).embedding_size)
    loss = loss.to(device)
    miner = build_miner(cfg, loss)

    optimizer = instantiate(cfg.optimizer)(param_groups(model, loss, cfg.optimizer.weight_decay, param_lr))
    scheduler = None
    if cfg.scheduler and cfg.scheduler.get("_target_"):
        scheduler = instantiate(cfg.scheduler, optimizer=optimizer,
                                total_iters=max(1, cfg.trainer.epochs * len(train_loader)))

    test_evaluator = build_evaluator(cfg, eval_loaders["query"], eval_loaders.get("gallery"))
    evaluator = build_evaluator(cfg, eval_loaders["validation"]) if "validation" in eval_loaders else test_evaluator
    trainer = Trainer(
        model=model, loss=loss, miner=miner, optimizer=optimizer, scheduler=scheduler,
        train_loader=train_loader, evaluator=evaluator, run_dir=run_dir, epochs=cfg.trainer.epochs,
        device=device, amp_dtype=amp_dtype, channels_last=cfg.trainer.channels_last,
        eval_every=cfg.trainer.eval_every, monitor=cfg.trainer.monitor, patience=cfg.trainer.patience,
        log_every_steps=cfg.trainer.log_every_steps, grad_clip=cfg.trainer.grad_clip,
        config=OmegaConf.to_container(cfg, resolve=True), progress=cfg.trainer.progress,
        eval_probes={"mi": lambda: mi_terms(evaluator.last_embeddings["query"],
                                            evaluator.last_embeddings["query_labels"])},
        checkpoint_every_steps=cfg.trainer.checkpoint_every_steps, world=world,
    )
    summary = trainer.fit(resume_from=checkpoint)
    selected = summary["metrics"][cfg.trainer.monitor]
    if evaluator is not test_evaluator and world.is_main:  # rank 0 evaluates, as during training
        test_selected_checkpoint(distributed.unwrap(model), test_evaluator, run_dir, device, amp_dtype, summary)
    return selected


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> float:
    return report_user_errors(train, cfg)


if __name__ == "__main__":
    distributed.share_start_time()  # before Hydra names the run folder
    main()
