"""DDP: one training step on 2 gloo processes, each holding half of the global batch, updates
the model and the loss's own parameters exactly as one process does on the whole batch, for a
loss with parameters (cross-entropy) and for a pairwise loss with a miner. Also: the ranks of a
SLURM job, as submitit derives them from SLURM's variables."""

import os
from unittest.mock import patch

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from pytorch_metric_learning.losses import ContrastiveLoss
from pytorch_metric_learning.miners import MultiSimilarityMiner
from torch import nn

from dml_bench.engine.distributed import World, distribute_model, launcher_world, unwrap
from dml_bench.engine.trainer import Trainer, TrainerSettings
from dml_bench.losses import CrossEntropyLoss

BATCH = 16


def batch():
    generator = torch.Generator().manual_seed(1)
    return torch.randn(BATCH, 6, generator=generator), torch.arange(BATCH) % 4


def build(loss_name: str):
    torch.manual_seed(0)
    model = nn.Linear(6, 4)
    if loss_name == "cross_entropy":  # zero-initialised classifier: give it values that matter
        loss, miner = CrossEntropyLoss(num_classes=4, embedding_size=4, zero_init=False), None
    else:
        loss, miner = ContrastiveLoss(pos_margin=0.0, neg_margin=0.5), MultiSimilarityMiner(epsilon=0.5)
    return model, loss, miner


LOSSES = ["cross_entropy", "contrastive_with_miner"]


def one_step(loss_name: str, world: World, run_dir) -> dict[str, torch.Tensor]:
    """The parameters after one real Trainer step on this rank's slice of the global batch."""
    model, loss, miner = build(loss_name)
    optimizer = torch.optim.SGD([*model.parameters(), *loss.parameters()], lr=0.5)
    if world.size > 1:
        model = distribute_model(model, torch.device("cpu"), sync_batchnorm=False)
    trainer = Trainer(model, loss, optimizer, None, None, TrainerSettings(run_dir=run_dir, epochs=1, world=world),
                      miner=miner)
    images, targets = batch()
    per_rank = BATCH // world.size
    own = slice(world.rank * per_rank, (world.rank + 1) * per_rank)
    trainer.train_step(images[own], targets[own])
    return {name: p.detach().clone() for name, p in [*unwrap(model).named_parameters(), *loss.named_parameters()]}


def rank_main(rank: int, run_dir) -> None:
    dist.init_process_group("gloo", init_method=f"file://{run_dir}/rendezvous", rank=rank, world_size=2)
    torch.save({name: one_step(name, World(rank, 2), run_dir) for name in LOSSES}, f"{run_dir}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_steps(tmp_path_factory) -> list[dict]:
    """Each rank's parameters after one step, per loss."""
    run_dir = tmp_path_factory.mktemp("ddp_step")
    mp.start_processes(rank_main, args=(run_dir,), nprocs=2, start_method="spawn")
    return [torch.load(run_dir / f"rank{rank}.pt") for rank in (0, 1)]


@pytest.mark.parametrize("loss_name", LOSSES)
def test_one_ddp_step_equals_one_single_process_step(loss_name, ddp_steps, tmp_path):
    single = one_step(loss_name, World(), tmp_path)
    model, loss, _ = build(loss_name)
    initial = dict([*model.named_parameters(), *loss.named_parameters()])
    for name, value in single.items():
        assert not torch.equal(value, initial[name].detach()), f"{name} did not move"
        for rank in ddp_steps:
            torch.testing.assert_close(rank[loss_name][name], value, rtol=1e-5, atol=1e-6)


SLURM_TASK = {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "4242", "SLURM_NTASKS": "8", "SLURM_JOB_NUM_NODES": "2",
              "SLURM_NODEID": "1", "SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_JOB_NODELIST": "gpu[07-08]"}


def test_ranks_of_a_slurm_job_come_from_slurm_variables():
    # patch.dict restores os.environ as a whole, the variables launcher_world exports included.
    with patch.dict(os.environ, SLURM_TASK):
        for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE"):
            os.environ.pop(name, None)
        assert launcher_world() == World(rank=5, size=8, local_rank=1)
        assert os.environ["MASTER_ADDR"] == "gpu07" and os.environ["WORLD_SIZE"] == "8"
    assert "RANK" not in os.environ
