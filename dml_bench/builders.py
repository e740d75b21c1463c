"""Objects built from the config, in the order data flows: data -> model -> loss -> optimizer ->
evaluation -> recording. ``train.py`` and ``evaluate.py`` both build from here."""

import logging
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from dml_bench.data.embedded import prepare_embedded
from dml_bench.data.loaders import SeededSamples, make_loader
from dml_bench.data.samplers import TooFewSamples
from dml_bench.data.split_files import split_file
from dml_bench.data.splits import open_split
from dml_bench.data.validation import class_disjoint_split, fold_split
from dml_bench.engine.optim import param_groups
from dml_bench.engine.recorders import Recorder, Recorders, RunContext, RunFiles
from dml_bench.engine.search_trial import trial_report
from dml_bench.engine.trainer import TrainerSettings
from dml_bench.evaluation.evaluator import RetrievalEvaluator
from dml_bench.losses.compat import check_miner
from dml_bench.runtime import distributed
from dml_bench.runtime.errors import UserError
from dml_bench.runtime.run_folder import multirun_job_name
from dml_bench.visualize.mlflow_grids import MLflowRetrievalBoard
from dml_bench.visualize.recorder import RetrievalBoard

log = logging.getLogger(__name__)


# ---- launch -------------------------------------------------------------------------------------
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


# ---- data ---------------------------------------------------------------------------------------
def build_datasets(cfg: DictConfig, *, with_train: bool = True) -> dict:
    """The training split (and, under a protocol with ``folds`` or ``validation_fraction``, the
    validation split carved out of it) and the test split(s): ``query`` and, for In-Shop,
    ``gallery``. Prepares the embedded data on first use, and again when its version or settings change."""
    data = cfg.dataset
    prepare_embedded(data)
    splits = {"train": (data.train_split, data.train_transform)} if with_train else {}
    splits["query"] = (data.query_split, data.test_transform)
    if data.gallery_split:
        splits["gallery"] = (data.gallery_split, data.test_transform)
    if data.get("cache") and any(transform.get("resize") is None for _, transform in splits.values()):
        raise UserError("dataset.cache=true needs a resize in dataset.train_transform and dataset.test_transform "
                        "(the cache stores images as that Resize makes them); set dataset.cache=false.")
    datasets = {role: open_split(data.name, data.root, split, instantiate(transform),
                                 transform.resize if data.get("cache") else None,
                                 allow_outside_root=bool(data.get("allow_outside_root")))
                for role, (split, transform) in splits.items()}
    if with_train and selection_split(cfg) == "validation":  # select on held-out training classes
        protocol, transform = cfg.protocol, instantiate(data.test_transform)
        if protocol.get("folds"):
            datasets["train"], datasets["validation"] = fold_split(
                datasets["train"], protocol.folds, protocol.fold, protocol.split_seed, transform)
        else:
            datasets["train"], datasets["validation"] = class_disjoint_split(
                datasets["train"], protocol.validation_fraction, protocol.split_seed, transform)
        log.info("validation split: %d of the training classes (%d images) held out",
                 datasets["validation"].num_classes, len(datasets["validation"]))
    warn_about_classes(datasets)
    return datasets


def warn_about_classes(datasets: dict) -> None:
    """Warn of splits that make the numbers meaningless while the run goes on: training classes
    that the test split has too (the benchmarks test on unseen classes), or a validation split of
    one class (its every neighbour is a hit, so each epoch scores 1)."""
    if "train" in datasets:
        train, test = datasets["train"], datasets["query"]
        shared = sorted(set(train.classes) & set(test.classes), key=str)
        if shared:
            log.warning("%d of the %d test classes (%s) are training classes too: retrieval benchmarks test on "
                        "classes unseen in training; check %s and %s", len(shared), test.num_classes,
                        ", ".join(map(str, shared[:5])) + (", ..." if len(shared) > 5 else ""),
                        split_file(train.root, train.split), split_file(test.root, test.split))
    if "validation" in datasets and datasets["validation"].num_classes < 2:
        log.warning("the validation split holds out a single class: every validation query's neighbours share its "
                    "label, so each epoch scores 1 and selects nothing; hold out more classes "
                    "(protocol.validation_fraction) or train on more classes")


def selection_split(cfg: DictConfig) -> str:
    """The split that selects the epoch: ``validation`` under a protocol that holds one out of the
    training classes (``protocol.folds`` or ``protocol.validation_fraction``), else ``test``."""
    protocol = cfg.protocol
    folds, fraction = protocol.get("folds"), protocol.get("validation_fraction")
    if folds and fraction:
        raise UserError(f"protocol.folds={folds} and protocol.validation_fraction={fraction} both choose a "
                        "validation split: set one of them to null.")
    if not (folds or fraction) and protocol.name != "paper":  # only protocol=paper selects on the test split
        raise UserError(f"protocol={protocol.name} selects the epoch on a validation split, but protocol.folds and "
                        "protocol.validation_fraction are both unset: set one (or use protocol=paper).")
    return "validation" if folds or fraction else "test"


def loader_options(cfg: DictConfig, device: torch.device) -> dict:
    pin_memory = device.type == "cuda" if cfg.trainer.pin_memory == "auto" else cfg.trainer.pin_memory
    return dict(num_workers=cfg.trainer.num_workers, pin_memory=pin_memory, seed=cfg.seed)


def build_train_loader(cfg: DictConfig, train_set, device: torch.device, world: distributed.World):
    """Batches of ``trainer.batch_size`` (the global batch; each rank loads its slice) drawn by
    the configured sampler."""
    batch_size = cfg.trainer.batch_size
    try:
        sampler = instantiate(cfg.sampler)(labels=train_set.targets, batch_size=batch_size, seed=cfg.seed,
                                           num_replicas=world.size, rank=world.rank)
    except TooFewSamples as error:
        raise small_split_error(cfg, train_set, error) from error
    loader = make_loader(SeededSamples(train_set), batch_size // world.size, sampler=sampler, drop_last=True,
                         **loader_options(cfg, device))
    log.info("epoch length: %d batches of %d = %d of the %d training images (%s)", len(loader), batch_size,
             len(loader) * batch_size, len(train_set), type(sampler).__name__)
    return loader


def small_split_error(cfg: DictConfig, train_set, error: TooFewSamples) -> UserError:
    held_out = (f", less the classes protocol.validation_fraction={cfg.protocol.validation_fraction} holds out"
                if cfg.protocol.validation_fraction else "")
    fix = (f"Lower it, e.g. trainer.batch_size={error.largest}, or train on more images"
           if error.largest else "Train on more images")
    return UserError(f"The training split is too small for trainer.batch_size={cfg.trainer.batch_size}: "
                     f"dataset.train_split={cfg.dataset.train_split} ({split_file(train_set.root, train_set.split)}"
                     f"{held_out}) has {len(train_set)} images of {train_set.num_classes} classes, and {error}. "
                     f"{fix}.")


def build_eval_loaders(cfg: DictConfig, datasets: dict, device: torch.device,
                       world: distributed.World = distributed.SINGLE_PROCESS) -> dict:
    """A loader of each evaluation split; under DDP of this rank's shard of it."""
    loaders = {}
    for role in ("query", "gallery", "validation"):
        if role not in datasets:
            continue
        dataset = datasets[role]
        if len(dataset) < world.size:
            raise UserError(f"The {role} split has {len(dataset)} images, fewer than the {world.size} ranks that "
                            "share its evaluation; launch fewer processes (torchrun --nproc-per-node).")
        sampler = distributed.shard(len(dataset), world) if world.size > 1 else None
        loaders[role] = make_loader(dataset, cfg.evaluation.batch_size, sampler=sampler,
                                    **loader_options(cfg, device))
    return loaders


# ---- model, loss, miner -------------------------------------------------------------------------
def build_model(cfg: DictConfig, device: torch.device, world: distributed.World) -> torch.nn.Module:
    memory_format = torch.channels_last if cfg.trainer.channels_last else torch.preserve_format
    model = instantiate(cfg.model).to(device, memory_format=memory_format)
    if cfg.trainer.compile:
        model.compile()  # in place: checkpoints keep the plain parameter names
    if world.size > 1:
        sync_batchnorm = cfg.trainer.sync_batchnorm
        if sync_batchnorm == "auto":  # BatchNorm frozen in eval mode has no batch statistics to sync
            sync_batchnorm = device.type == "cuda" and not cfg.model.get("freeze_bn", False)
        model = distributed.distribute_model(model, device, sync_batchnorm)
    return model


def build_trained_model(model_cfg: DictConfig, state: dict) -> torch.nn.Module:
    """A trained run's model from its checkpoint's weights, without fetching pretrained weights
    (the checkpoint overwrites them)."""
    options = OmegaConf.to_container(model_cfg)
    for key, neutral in (("pretrained", False), ("weights", None)):
        if key in options:
            options[key] = neutral
    model = instantiate(OmegaConf.create(options))
    model.load_state_dict(state)
    return model


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


# ---- optimisation -------------------------------------------------------------------------------
def build_optimizer(cfg: DictConfig, model: torch.nn.Module, loss: torch.nn.Module, param_lr: float | None):
    return instantiate(cfg.optimizer)(param_groups(model, loss, cfg.optimizer.weight_decay, param_lr))


def build_scheduler(cfg: DictConfig, optimizer, steps_per_epoch: int):
    if not cfg.scheduler or not cfg.scheduler.get("_target_"):
        return None
    return instantiate(cfg.scheduler, optimizer=optimizer, total_iters=max(1, cfg.trainer.epochs * steps_per_epoch))


# ---- evaluation ---------------------------------------------------------------------------------
def build_evaluator(cfg: DictConfig, query_loader, gallery_loader=None,
                    world: distributed.World = distributed.SINGLE_PROCESS, split: str = "test") -> RetrievalEvaluator:
    """Under DDP the loaders hold this rank's shards (``build_eval_loaders``): every rank embeds
    its own, rank 0 computes the metrics."""
    return RetrievalEvaluator(query_loader, gallery_loader, recall_ks=cfg.evaluation.recall_ks,
                              distance=cfg.evaluation.distance, backend=cfg.evaluation.backend,
                              progress=cfg.trainer.progress and world.is_main, world=world,
                              exclude=cfg.evaluation.exclude, euclidean_recall=cfg.evaluation.euclidean_recall,
                              split=split)


def build_test_evaluator(cfg: DictConfig, device: torch.device) -> tuple[dict, RetrievalEvaluator]:
    """The test split(s) of a trained run (``query``, and ``gallery`` for In-Shop) and their
    evaluator, as ``dml_bench.evaluate`` and the concatenated folds evaluate a checkpoint."""
    datasets = build_datasets(cfg, with_train=False)
    loaders = build_eval_loaders(cfg, datasets, device)
    return datasets, build_evaluator(cfg, loaders["query"], loaders.get("gallery"))


def build_evaluators(cfg: DictConfig, eval_loaders: dict, world: distributed.World = distributed.SINGLE_PROCESS
                     ) -> tuple[RetrievalEvaluator, RetrievalEvaluator]:
    """(the evaluator that selects the epoch, the test evaluator): the same one under
    protocol=paper, the validation split's under a protocol that holds one out."""
    test = build_evaluator(cfg, eval_loaders["query"], eval_loaders.get("gallery"), world=world)
    if "validation" not in eval_loaders:
        return test, test
    return build_evaluator(cfg, eval_loaders["validation"], world=world, split="validation"), test


# ---- the trainer's settings and records ---------------------------------------------------------
def trainer_settings(cfg: DictConfig, run_dir: Path, device: torch.device, world: distributed.World,
                     amp_dtype: torch.dtype | None) -> TrainerSettings:
    t = cfg.trainer
    return TrainerSettings(
        run_dir=run_dir, epochs=t.epochs, device=device, world=world, amp_dtype=amp_dtype,
        channels_last=t.channels_last, eval_every=t.eval_every, monitor=t.monitor,
        monitor_decimals=t.monitor_decimals, patience=t.patience,
        log_every_steps=t.log_every_steps, grad_clip=t.grad_clip, checkpoint_every_steps=t.checkpoint_every_steps,
        progress=t.progress, selected_on=selection_split(cfg), config=OmegaConf.to_container(cfg, resolve=True),
    )


def build_recorder(cfg: DictConfig, run_dir: Path, world: distributed.World, datasets: dict) -> Recorder:
    """Rank 0 writes history.jsonl, metrics.json (the run's record, whatever the loggers) and
    feeds the loggers of ``logger`` (configs/logger/), each built by its config from the run's
    context; other ranks record nothing. ``trainer.log_retrievals`` draws its pictures through
    the TensorBoard and MLflow loggers; with neither, a warning says so."""
    if not world.is_main:
        return Recorder()
    tests = {role: datasets[role] for role in ("query", "gallery") if role in datasets}
    run = RunContext(run_dir, multirun_job_name(run_dir), OmegaConf.to_container(cfg, resolve=True), tests)
    loggers = [instantiate(options)(run) for options in (cfg.get("logger") or {}).values()]
    if cfg.trainer.log_retrievals and not any(isinstance(lg, RetrievalBoard | MLflowRetrievalBoard) for lg in loggers):
        log.warning("trainer.log_retrievals=true draws its pictures for logger=tensorboard or logger=mlflow; "
                    "with logger=%s none is drawn.", list(cfg.get("logger") or []))
    report = trial_report(cfg)  # a search trial with a pruner: last, so that the others record a pruned epoch
    return Recorders([RunFiles(run_dir), *loggers, *([report] if report else [])])
