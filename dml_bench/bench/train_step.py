"""The training-step benchmark: a bare PyTorch loop against our Trainer, and what each loss costs.

Batches are made in memory (random uint8 images, labels with ``m`` images per class so miners find
pairs), so the figures measure the step (forward, loss, backward, optimizer), not decoding.
"""

import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from pytorch_metric_learning import losses, miners
from torch import nn

from dml_bench.engine.recorders import TensorBoard
from dml_bench.engine.trainer import Trainer, TrainerSettings
from dml_bench.losses import CrossEntropyLoss
from dml_bench.models import Embedder, SmallConvNet, TorchvisionBackbone
from dml_bench.runtime.device import autocast

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
NUM_CLASSES = 100  # classes the in-memory batches are drawn from (the cross-entropy's outputs)


def make_model(arch: str) -> Embedder:
    """``small``: the quickstart's CNN (128-d); ``resnet50``: the paper's network (2048-d)."""
    if arch == "small":
        return Embedder(SmallConvNet((16, 32, 64, 128)), embedding_size=128, mean=(0.5,) * 3, std=(0.5,) * 3)
    if arch == "resnet50":
        return Embedder(TorchvisionBackbone("resnet50"), freeze_bn=True)  # random weights: speed only
    raise ValueError(f"unknown arch {arch!r}: small or resnet50")


def make_batches(count: int, batch_size: int, image_size: int, num_classes: int = NUM_CLASSES, m: int = 4,
                 pin: bool = False, seed: int = 0) -> list[Batch]:
    """``count`` batches of uint8 images with ``batch_size // m`` classes of ``m`` images each."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        classes = torch.randperm(num_classes, generator=generator)[: batch_size // m]
        images = torch.randint(0, 256, (batch_size, 3, image_size, image_size), dtype=torch.uint8,
                               generator=generator)
        batch = (images, classes.repeat_interleave(m), torch.arange(batch_size))
        batches.append(tuple(t.pin_memory() for t in batch) if pin else batch)
    return batches


def loss_and_miner(name: str, embedding_size: int, num_classes: int):
    """The compared objectives: the paper's cross-entropy, and pairwise losses with their miners."""
    if name == "cross-entropy":
        return CrossEntropyLoss(num_classes, embedding_size, label_smoothing=0.1), None
    if name == "contrastive + MS miner":
        return losses.ContrastiveLoss(pos_margin=0.0, neg_margin=0.5), miners.MultiSimilarityMiner(epsilon=0.1)
    if name == "multi-similarity + MS miner":
        return losses.MultiSimilarityLoss(), miners.MultiSimilarityMiner(epsilon=0.1)
    if name == "triplet + semihard miner":
        return (losses.TripletMarginLoss(margin=0.2),
                miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard"))
    raise ValueError(f"unknown loss {name!r}")


LOSSES = ("cross-entropy", "contrastive + MS miner", "multi-similarity + MS miner", "triplet + semihard miner")


def _sgd(model: nn.Module, loss: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD([*model.parameters(), *loss.parameters()], lr=1e-3, momentum=0.9, weight_decay=5e-4)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_loop(model, loss, batches: list[Batch], device, amp_dtype=None, channels_last=False) -> Callable[[], int]:
    """A hand-written loop over ``batches``: the reference the Trainer's overhead is measured on."""
    optimizer = _sgd(model, loss)
    memory_format = torch.channels_last if channels_last else torch.preserve_format

    def run() -> int:
        model.train()
        for images, targets, _ in batches:
            images = images.to(device, non_blocking=True, memory_format=memory_format)
            targets = targets.to(device, non_blocking=True)
            with autocast(device, amp_dtype):
                embeddings = model(images)
            value = loss(embeddings.float(), targets)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
        _synchronize(device)
        return sum(len(b[0]) for b in batches)

    return run


def trainer_epochs(model, loss, batches: list[Batch], scratch: Path, device, amp_dtype=None, channels_last=False,
                   miner=None) -> Callable[[], int]:
    """One ``Trainer.train_one_epoch`` over ``batches`` per call, TensorBoard logging included, into
    a new run folder inside ``scratch`` (a folder the caller removes)."""
    run_dir = Path(tempfile.mkdtemp(dir=scratch))
    settings = TrainerSettings(run_dir=run_dir, epochs=1, device=device, amp_dtype=amp_dtype,
                               channels_last=channels_last, progress=False)
    recorder = TensorBoard(run_dir / "tb")
    recorder.open(None, [])  # what fit() does before training
    trainer = Trainer(model, loss, _sgd(model, loss), batches, None, settings, miner=miner, recorder=recorder)

    def run() -> int:
        trainer.train_one_epoch()
        _synchronize(device)
        return sum(len(b[0]) for b in batches)

    return run
