"""Optimizer parameter groups and the paper's per-iteration warm-up + cosine schedule."""

import math

from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def param_groups(model: nn.Module, loss: nn.Module, weight_decay: float, loss_lr: float | None = None):
    """Split parameters into groups: weight decay only on tensors with dim > 1 (the paper's rule:
    no decay on biases and norm parameters); the loss's own parameters (classifier, proxies,
    centers) in groups of their own, with ``loss_lr`` when given."""

    def split(module: nn.Module, name: str, extra: dict):
        params = [p for p in module.parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        return [
            {"params": group, "weight_decay": wd, "name": f"{name}{suffix}", **extra}
            for group, wd, suffix in ((decay, weight_decay, ""), (no_decay, 0.0, "_no_decay"))
            if group
        ]

    loss_extra = {"lr": loss_lr} if loss_lr is not None else {}
    return split(model, "model", {}) + split(loss, "loss", loss_extra)


class WarmCosineLR(LambdaLR):
    """The paper's "warmcos", stepped every iteration: the learning rate times
    min((i+1)/warmup_iters, (1 + cos(pi * i / total_iters)) / 2)."""

    def __init__(self, optimizer: Optimizer, total_iters: int, warmup_iters: int = 100):
        self.total_iters, self.warmup_iters = total_iters, warmup_iters
        super().__init__(optimizer, self.multiplier)

    def multiplier(self, i: int) -> float:
        return min((i + 1) / self.warmup_iters, 0.5 * (1 + math.cos(math.pi * i / self.total_iters)))
