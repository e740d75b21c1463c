"""Turning the data pipeline's uint8 images into the float input a network expects, on the device."""

from collections.abc import Sequence

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PixelNormalize(nn.Module):
    """uint8 (B, 3, H, W) in [0, 255] -> float32 ``(x / 255 - mean) / std`` per channel.

    The data pipeline hands over bytes (4x less to copy to the device than float32), so this is
    where images are normalised, once. Floating-point input is taken as already normalised and
    passes through unchanged. The memory format (e.g. channels_last) is kept.
    """

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        super().__init__()
        mean, std = torch.tensor(list(mean), dtype=torch.float32), torch.tensor(list(std), dtype=torch.float32)
        # Not saved in checkpoints: they come from the config, like the rest of the architecture.
        self.register_buffer("scale", (1 / (255 * std)).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("shift", (-mean / std).view(1, -1, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            return images
        return images.float().mul_(self.scale).add_(self.shift)
