"""Train an embedding: ``python -m dml_bench.train [experiment=NAME] [overrides...]``.

Reads top to bottom in the order data flows: config -> data -> model -> loss (+ miner) ->
optimizer + schedule -> Trainer.fit -> metrics. Every object is built in ``dml_bench.builders``
and injected here.
"""

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from dml_bench import builders
from dml_bench.config_checks import check_config, warn_unused_plugins
from dml_bench.engine.audit import audit_card, log_card
from dml_bench.engine.final_test import test_selected_checkpoint
from dml_bench.engine.resume import resume_checkpoint
from dml_bench.engine.run_info import run_info
from dml_bench.engine.trainer import Trainer
from dml_bench.evaluation.mi_terms import mi_probe
from dml_bench.runtime import distributed, interruption, run_claim, run_folder
from dml_bench.runtime.device import resolve_amp, resolve_device, set_deterministic, set_tf32
from dml_bench.runtime.entry import report_user_errors, seed_everything
from dml_bench.runtime.files import write_json

log = logging.getLogger("dml_bench.train")


def train(cfg: DictConfig) -> float | None:
    """Returns the validation value of ``trainer.monitor`` at the selected epoch (a search's
    objective, configs/search/), never a test metric: None under protocol=paper. Rank 0 holds
    the run folder's lock meanwhile (``dml_bench.runtime.run_claim``)."""
    check_config(cfg)
    warn_unused_plugins()
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if run_folder.launcher_rank() != 0:
        return _train(cfg, run_dir)
    run_claim.start_in(run_dir, resume=bool(cfg.resume))
    try:
        return _train(cfg, run_dir)
    finally:
        run_claim.release(run_dir)


def _train(cfg: DictConfig, run_dir: Path) -> float | None:
    checkpoint = None
    if cfg.resume:
        checkpoint = resume_checkpoint(cfg.resume, run_dir, OmegaConf.to_container(cfg, resolve=False),
                                       HydraConfig.get().overrides.task)
    world = builders.build_world(cfg)
    if cfg.resume and checkpoint is None:  # logged from here on by rank 0 alone
        log.info("resume=%s: no checkpoint to continue from (%s does not exist yet); the run starts again from "
                 "scratch in its folder", cfg.resume, run_dir / "checkpoints" / "last.pt")
    seed_everything(cfg.seed)
    device = distributed.rank_device(resolve_device(cfg.trainer.device), world)
    deterministic = set_deterministic(cfg.trainer.deterministic, device)
    set_tf32(cfg.trainer.tf32)
    amp_dtype = resolve_amp(cfg.trainer.amp, device)
    if world.is_main:
        info = run_info(device, cfg.seed, world.size, deterministic, cfg.trainer.tf32)
        write_json(run_dir / "run_info.json", info)

    datasets = builders.build_datasets(cfg)
    train_set = datasets["train"]
    train_loader = builders.build_train_loader(cfg, train_set, device, world)
    eval_loaders = builders.build_eval_loaders(cfg, datasets, device, world)

    model = builders.build_model(cfg, device, world)
    loss, param_lr = builders.build_loss(cfg, train_set.num_classes, distributed.unwrap(model).embedding_size)
    loss = loss.to(device)
    miner = builders.build_miner(cfg, loss)

    optimizer = builders.build_optimizer(cfg, model, loss, param_lr)
    scheduler = builders.build_scheduler(cfg, optimizer, len(train_loader))

    evaluator, test_evaluator = builders.build_evaluators(cfg, eval_loaders, world)
    if world.is_main:
        card = audit_card(distributed.unwrap(model), datasets, train_loader, world_size=world.size,
                          amp_dtype=amp_dtype, protocol=cfg.protocol.name, monitor=cfg.trainer.monitor)
        log_card(card)
        write_json(run_dir / "run_info.json", {**info, "audit": card})
    recorder = builders.build_recorder(cfg, run_dir, world, datasets)
    trainer = Trainer(model, loss, optimizer, train_loader, evaluator,
                      builders.trainer_settings(cfg, run_dir, device, world, amp_dtype),
                      miner=miner, scheduler=scheduler, recorder=recorder, probes={"mi": mi_probe})
    summary = trainer.fit(resume_from=checkpoint)
    validated = evaluator is not test_evaluator  # protocol=paper selects on the test split
    objective = summary["metrics"][cfg.trainer.monitor] if validated else None  # the validation value
    if validated:  # every rank embeds its shard, as during training
        test_selected_checkpoint(distributed.unwrap(model), test_evaluator, run_dir, device, amp_dtype, summary,
                                 recorder, world)
    if world.is_main:
        print(f"\nrun folder: {run_dir}")  # the last line, once everything is written
    distributed.shut_down(world)
    return objective


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def _main(cfg: DictConfig) -> float | None:
    with interruption.reported():
        return report_user_errors(train, cfg)


def main() -> None:
    run_folder.register()  # configs/train.yaml names its run folder with these resolvers
    interruption.ended_by_signals(_main)


if __name__ == "__main__":
    distributed.share_start_time()  # before Hydra names the run folder
    main()
