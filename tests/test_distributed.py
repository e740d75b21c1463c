"""DDP: one training step on 2 gloo processes, each holding half of the global batch, updates
the model and the loss's own parameters exactly as one process does on the whole batch, for a
loss with parameters (cross-entropy) and for a pairwise loss with a miner. Sharded evaluation on 2
gloo processes: every image embedded exactly once, the metrics of one process. Also: the ranks of
a SLURM job, as submitit derives them from SLURM's variables."""

import os
import time
from unittest.mock import patch

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from omegaconf import OmegaConf
from pytorch_metric_learning.losses import ContrastiveLoss
from pytorch_metric_learning.miners import MultiSimilarityMiner
from torch import nn
from torch.utils.data import Dataset

from dml_bench.builders import build_eval_loaders, build_evaluators
from dml_bench.engine import final_test
from dml_bench.engine.checkpoint import save_checkpoint
from dml_bench.engine.recorders import Recorder
from dml_bench.engine.trainer import Trainer, TrainerSettings
from dml_bench.losses import CrossEntropyLoss
from dml_bench.models import Embedder, SmallConvNet
from dml_bench.runtime.distributed import World, broadcast_object, distribute_model, launcher_world, shard, unwrap
from dml_bench.runtime.errors import UserError

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


class Images(Dataset):
    """``num`` random uint8 images of 3 classes, items shaped like RetrievalDataset's; keeps the
    index of every image it serves."""

    def __init__(self, num: int, seed: int):
        self.images = torch.randint(0, 256, (num, 3, 8, 8), dtype=torch.uint8,
                                    generator=torch.Generator().manual_seed(seed))
        self.labels = [i % 3 for i in range(num)]
        self.served = []

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        self.served.append(index)
        return self.images[index], self.labels[index], index


def evaluate_splits(cfg: dict, world: World, run_dir) -> dict:
    """Both evaluators of a run that holds out validation (leave-one-out on 9 images; 7 queries
    against a gallery of 9), built as train.py builds them, applied to the saved model; then the
    final test of that model as best.pt, which rank 0 writes late (the other rank must wait)."""
    datasets = {"query": Images(7, 0), "gallery": Images(9, 1), "validation": Images(9, 2)}
    cfg = OmegaConf.create(cfg)
    selecting, test = build_evaluators(cfg, build_eval_loaders(cfg, datasets, torch.device("cpu"), world), world)
    model = Embedder(SmallConvNet((4, 8)), embedding_size=4)
    model.load_state_dict(torch.load(run_dir / "model.pt"))
    evaluations = [evaluator(model, torch.device("cpu")) for evaluator in (selecting, test)]
    served = {role: list(data.served) for role, data in datasets.items()}
    summary = {"metrics": broadcast_object(evaluations[0] and evaluations[0].metrics, world)}  # as Trainer.fit's
    if world.is_main:  # after the broadcast, as Trainer.fit: the other rank reaches the final test first
        time.sleep(1)
        save_checkpoint(run_dir / "checkpoints" / "best.pt", {"model": model.state_dict(), "epoch": 3})
    summary = final_test.test_selected_checkpoint(model, test, run_dir, torch.device("cpu"), None, summary, Recorder(),
                                                  world)
    return {"evaluations": evaluations, "summary": summary, "served": served}


EVAL_OVERRIDES = ["evaluation.batch_size=2", "trainer.num_workers=0", "trainer.progress=false",
                  "evaluation.recall_ks=[1,2,4]"]


def rank_main(rank: int, run_dir, cfg: dict) -> None:
    """One training step per loss, then both evaluations, saved for the test process."""
    dist.init_process_group("gloo", init_method=f"file://{run_dir}/rendezvous", rank=rank, world_size=2)
    world = World(rank, 2)
    steps = {name: one_step(name, world, run_dir) for name in LOSSES}
    torch.save({"steps": steps, "evaluation": evaluate_splits(cfg, world, run_dir)}, run_dir / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_ranks(tmp_path_factory) -> tuple[list[dict], dict, object]:
    """What each of 2 gloo ranks computed (its parameters after one step, per loss; its
    evaluations), the evaluation config, and the folder that holds the evaluated model."""
    from tests.helpers.config import compose_config

    run_dir = tmp_path_factory.mktemp("ddp")
    cfg = OmegaConf.to_container(compose_config(EVAL_OVERRIDES))
    torch.manual_seed(0)
    model = Embedder(SmallConvNet((4, 8)), embedding_size=4)
    for _ in range(2):  # BatchNorm statistics that differ from their initial values
        model(torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8))
    torch.save(model.state_dict(), run_dir / "model.pt")
    mp.start_processes(rank_main, args=(run_dir, cfg), nprocs=2, start_method="spawn")
    return [torch.load(run_dir / f"rank{rank}.pt", weights_only=False) for rank in (0, 1)], cfg, run_dir


@pytest.mark.parametrize("loss_name", LOSSES)
def test_one_ddp_step_equals_one_single_process_step(loss_name, ddp_ranks, tmp_path):
    single = one_step(loss_name, World(), tmp_path)
    model, loss, _ = build(loss_name)
    initial = dict([*model.named_parameters(), *loss.named_parameters()])
    for name, value in single.items():
        assert not torch.equal(value, initial[name].detach()), f"{name} did not move"
        for rank in ddp_ranks[0]:
            torch.testing.assert_close(rank["steps"][loss_name][name], value, rtol=1e-5, atol=1e-6)


def test_sharded_evaluation_embeds_every_image_once_and_matches_one_process(ddp_ranks):
    """Splits of 7 and 9 images in batches of 2: each rank embeds its contiguous shard (9 = 4 + 5),
    rank 0 gathers them in dataset order and has the metrics a single process has."""
    ranks, cfg, run_dir = ddp_ranks
    ranks = [rank["evaluation"] for rank in ranks]
    single = evaluate_splits(cfg, World(), run_dir)
    for role, served in single["served"].items():
        assert served == list(range(len(served)))
        for rank, result in enumerate(ranks):  # each rank its own contiguous share, none padded
            assert result["served"][role] == list(shard(len(served), World(rank, 2))), (role, rank)
        assert sorted(ranks[0]["served"][role] + ranks[1]["served"][role]) == served, role
    assert ranks[1]["evaluations"] == [None, None]  # rank 0 alone computes the metrics
    for sharded, one in zip(ranks[0]["evaluations"], single["evaluations"]):
        assert sharded.metrics == one.metrics
        assert sharded.embeddings.keys() == one.embeddings.keys()
        for name, value in one.embeddings.items():
            torch.testing.assert_close(sharded.embeddings[name], value, rtol=0, atol=1e-6)
        for name, value in one.per_query.items():
            assert (sharded.per_query[name] == value).all(), name
    assert [len(e.embeddings["query"]) for e in single["evaluations"]] == [9, 7]
    assert "gallery" in single["evaluations"][1].embeddings
    test_metrics = single["evaluations"][1].metrics
    assert ranks[0]["summary"]["metrics"] == single["summary"]["metrics"] == test_metrics
    validation_metrics = single["evaluations"][0].metrics
    assert ranks[0]["summary"]["validation_metrics"] == validation_metrics
    assert ranks[1]["summary"] == {"metrics": validation_metrics}  # rank 0 alone records the final test


@pytest.mark.parametrize("num", [7, 9, 10, 2])
@pytest.mark.parametrize("size", [1, 2, 3])
def test_shards_hold_each_item_once_in_order(num, size):
    shards = [shard(num, World(rank, size)) for rank in range(size)]
    assert [i for part in shards for i in part] == list(range(num))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_a_split_smaller_than_the_number_of_ranks_is_a_user_error():
    cfg = OmegaConf.create({"evaluation": {"batch_size": 2}, "trainer": {"num_workers": 0, "pin_memory": False},
                            "seed": 0})
    with pytest.raises(UserError, match="The validation split has 3 images, fewer than the 4 ranks"):
        build_eval_loaders(cfg, {"query": Images(9, 0), "validation": Images(3, 1)}, torch.device("cpu"), World(3, 4))


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
