"""Embedder = backbone (pooled features) + neck: optional linear, BatchNorm1d, L2 normalisation."""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dml_bench.models.backbones import load_backbone_weights
from dml_bench.models.pixel_normalize import IMAGENET_MEAN, IMAGENET_STD, PixelNormalize
from dml_bench.runtime.errors import UserError

LINEAR_INITS = ("default", "orthogonal")  # default: torch's nn.Linear initialisation


class Embedder(nn.Module):
    """(B, 3, H, W) -> (B, embedding_size).

    The neck, in order: ``Linear(backbone.out_features, embedding_size)`` when ``embedding_size``
    is set; ``BatchNorm1d(affine=False)`` when ``bn1d`` (the paper on Cars, SOP, In-Shop); L2
    normalisation when ``l2_normalize``. ``freeze_bn`` keeps every BatchNorm2d of the backbone
    in eval mode during training (running statistics frozen, affine parameters still trained).
    ``weights`` (a file) or ``pretrained`` (the backbone's published weights) initialise the
    backbone through its ``load_weights``; otherwise it keeps its random initialisation.
    ``initial_weights`` keeps what was read (the file, see ``load_backbone_weights``; None: random).
    uint8 images (what the data pipeline yields) are first normalised with ``mean``/``std``: when
    None, those the backbone's weights were trained with (its ``mean``/``std``), else ImageNet's.
    ``linear_init="orthogonal"`` starts the linear layer as an orthogonal matrix with a zero bias
    (Ermolov et al.'s head): at ``embedding_size`` equal to the feature's, it then keeps every
    cosine similarity of the backbone's features, so the evaluation before training scores them.
    """

    def __init__(
        self,
        backbone: nn.Module,
        embedding_size: int | None = None,
        bn1d: bool = False,
        l2_normalize: bool = False,
        freeze_bn: bool = False,
        pretrained: bool = False,
        weights: str | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        linear_init: str = "default",
    ):
        super().__init__()
        if linear_init not in LINEAR_INITS:
            raise UserError(f"model.linear_init={linear_init} must be one of {', '.join(LINEAR_INITS)}.")
        mean = mean if mean is not None else getattr(backbone, "mean", IMAGENET_MEAN)
        std = std if std is not None else getattr(backbone, "std", IMAGENET_STD)
        self.input_norm = PixelNormalize(mean, std)
        self.backbone = backbone
        self.initial_weights = load_backbone_weights(backbone, weights) if pretrained or weights else None
        features = backbone.out_features
        self.linear = nn.Linear(features, embedding_size) if embedding_size else nn.Identity()
        if embedding_size and linear_init == "orthogonal":
            nn.init.orthogonal_(self.linear.weight)
            nn.init.zeros_(self.linear.bias)
        self.embedding_size = embedding_size or features
        self.bn1d = nn.BatchNorm1d(self.embedding_size, affine=False) if bn1d else nn.Identity()
        self.l2_normalize = l2_normalize
        self.freeze_bn = freeze_bn

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.freeze_bn:
            for module in self.backbone.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        embeddings = self.bn1d(self.linear(self.backbone(self.input_norm(images))))
        return F.normalize(embeddings, dim=1) if self.l2_normalize else embeddings
