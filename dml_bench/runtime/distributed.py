"""Data-parallel training across processes, set up from the launcher's environment.

torchrun announces each process's rank in RANK / WORLD_SIZE / LOCAL_RANK; a submitit job (Hydra's
submitit launcher, on SLURM or locally) is turned into the same variables by submitit, which reads
SLURM's (SLURM_PROCID, SLURM_NTASKS, SLURM_JOB_NODELIST...). Every rank trains on its slice of
each global batch; ``gather_batch`` then gives every rank the embeddings of the whole global batch,
so every loss and miner computes exactly what a single process computes on that batch. Every rank
embeds its ``shard`` of each evaluation split and ``gather_rows`` puts the shards together; rank 0
alone computes the metrics and writes files.
"""

import datetime
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from dml_bench.runtime.errors import UserError
from dml_bench.runtime.run_folder import START_TIME_ENV


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of a run: a single process by default."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE_PROCESS = World()


def launcher_world() -> World:
    """The ranks of this launch: torchrun's variables, or those submitit derives for a job with
    several tasks (exported under torchrun's names so that ``init_process_group`` finds them)."""
    env = os.environ
    if "RANK" not in env and "SUBMITIT_EXECUTOR" in env:
        from submitit.helpers import TorchDistributedEnvironment

        job = TorchDistributedEnvironment()
        if job.world_size > 1:
            job.export(set_cuda_visible_devices=False)
    return World(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


def init_distributed(world: World) -> None:
    """Join the process group of ``world`` once per process: gloo carries CPU tensors, NCCL CUDA
    ones. The other ranks wait while rank 0 computes metrics, hence the long timeout."""
    if world.size == 1 or dist.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(world.local_rank)
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend, timeout=datetime.timedelta(hours=1))


def shut_down(world: World) -> None:
    """Leave the process group together: every rank waits until all are done (rank 0 may still be
    testing the selected checkpoint), so none exits while gloo or NCCL still serve another."""
    if world.size > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def share_start_time() -> None:
    """Give every rank of a torchrun launch rank 0's start time, from which Hydra names the run
    folder (``dml_bench.now``, see ``dml_bench.runtime.run_folder``): ranks started a second apart would otherwise
    write to different folders."""
    world = launcher_world()
    if world.size == 1:
        return
    init_distributed(world)
    stamp = [datetime.datetime.now().isoformat()]
    dist.broadcast_object_list(stamp, src=0, device=torch.device("cpu"))
    os.environ[START_TIME_ENV] = stamp[0]


def rank_zero_logging(world: World) -> None:
    """Ranks other than 0 keep only warnings and errors, on the console; rank 0 writes the log."""
    if world.is_main:
        return
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(logging.WARNING)


def rank_device(device: torch.device, world: World) -> torch.device:
    """Each rank of a multi-GPU run uses the GPU of its local rank."""
    if device.type == "cuda" and world.size > 1:
        return torch.device("cuda", world.local_rank)
    return device


def distribute_model(model: nn.Module, device: torch.device, sync_batchnorm: bool) -> nn.Module:
    """DistributedDataParallel around ``model``; SyncBatchNorm (CUDA only) first when asked, so
    that BatchNorm normalises with the statistics of the global batch."""
    if sync_batchnorm:
        if device.type != "cuda":
            raise UserError("trainer.sync_batchnorm=true needs CUDA (torch's SyncBatchNorm has no CPU "
                            "kernel); use trainer.sync_batchnorm=auto or false on CPU.")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


class _GatherBatch(torch.autograd.Function):
    """Every rank's slice of the global batch, concatenated in rank order (the order of the
    single-process batch, as the samplers slice it). The backward pass keeps this rank's slice
    of the gradient times the number of ranks: every rank computes the same loss of the whole
    batch, and DDP then averages the model's gradients over the ranks, so the product is the
    single-process gradient. (PML's DistributedLossWrapper instead multiplies the loss itself by
    the number of ranks, which also multiplies the gradient of a loss's own parameters, and puts
    each rank's own slice first, so that ranks see the batch in different orders.)"""

    @staticmethod
    def forward(ctx, local: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, local.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        rank, size = dist.get_rank(), dist.get_world_size()
        per_rank = grad.shape[0] // size
        return grad[rank * per_rank : (rank + 1) * per_rank] * size


def gather_batch(local: torch.Tensor) -> torch.Tensor:
    return _GatherBatch.apply(local)


def average_gradients(parameters) -> None:
    """Average gradients over the ranks, as DDP does for the model: here for the loss's own
    parameters (classifier, proxies), which every rank computes from the same global batch, so
    that they cannot drift apart."""
    size = dist.get_world_size()
    for parameter in parameters:
        if parameter.grad is not None:
            dist.all_reduce(parameter.grad)
            parameter.grad /= size


def shard(num: int, world: World) -> range:
    """This rank's contiguous share of ``num`` items in rank order, sizes differing by at most one,
    never padded: together the ranks' shards hold each item exactly once (torch's
    DistributedSampler repeats items to even the shards out)."""
    return range(world.rank * num // world.size, (world.rank + 1) * num // world.size)


def gather_rows(local: torch.Tensor, world: World) -> torch.Tensor:
    """Every rank's rows of ``local`` (any number of them, the other dimensions alike), concatenated
    in rank order, on every rank: padded to the longest shard for ``all_gather``, then trimmed."""
    if world.size == 1:
        return local
    sizes = [torch.zeros(1, dtype=torch.long, device=local.device) for _ in range(world.size)]
    dist.all_gather(sizes, torch.tensor([len(local)], device=local.device))
    sizes = [int(size) for size in sizes]
    padded = local.new_zeros((max(sizes), *local.shape[1:]))
    padded[: len(local)] = local
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([part[:size] for part, size in zip(parts, sizes)])


def wait_for_all(world: World) -> None:
    """Every rank waits here until all have arrived (e.g. until rank 0 has written a checkpoint)."""
    if world.size > 1:
        dist.barrier()


def broadcast_object(value, world: World):
    """Rank 0's ``value`` on every rank."""
    if world.size == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0, device=torch.device("cpu"))
    return box[0]
