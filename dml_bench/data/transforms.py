"""Train and test image transforms on uint8 tensors, parametrised the way the paper's recipes differ.

train: [Resize] -> [ColorJitter] -> RandomResizedCrop(crop, scale, ratio) -> [flip]
test:  [Resize] -> CenterCrop(crop)
``resize`` is an int (shorter side) or a pair (exact height, width); None skips the resize.

Both take the (3, H, W) uint8 RGB tensor of ``read_rgb`` and return a (3, crop, crop) uint8
tensor: batches cross to the device as bytes, and the model converts them to float and normalises
them there (``dml_bench.models.PixelNormalize``, once). ``min_decode_size`` tells the dataset how
small a JPEG may be decoded without changing what Resize produces.

The train transform draws the same augmentations as the torchvision Compose above, for less work:
- Resize and RandomResizedCrop are one resampling. The crop box is drawn in the coordinates of the
  image Resize would produce (same scale and ratio distribution), mapped onto the decoded image and
  resized once to crop x crop.
- ColorJitter runs on the small crop, in float32. Brightness, saturation and hue act on each pixel
  alone, so they commute with cropping and resizing; contrast blends towards the mean grey level of
  the whole image, which is measured on a subsampled copy of the whole image given the same earlier
  steps.
- Random numbers come from torch's generator in the Compose's order (jitter, crop, flip), so one
  seed gives the plain pipeline's crop boxes, jitter factors and flips.
The outputs then differ from the plain pipeline's only by resampling and rounding.
"""

from collections.abc import Sequence

import torch
from torchvision import transforms as T
from torchvision.transforms import functional as F
from torchvision.transforms.v2 import functional as F2

Resize = int | Sequence[int] | None
# Side of the subsampled copy of the whole image that gives the contrast's mean grey level.
_MEAN_SAMPLE_SIDE = 64


def resized_size(height: int, width: int, resize: Resize) -> tuple[int, int]:
    """(height, width) of the image ``Resize(resize)`` makes of a height x width image."""
    if resize is None:
        return height, width
    if not isinstance(resize, int):
        return int(resize[0]), int(resize[1])
    if width <= height:
        return int(resize * height / width), resize
    return resize, int(resize * width / height)


def min_decode_size(resize: Resize) -> tuple[int, int] | None:
    """(width, height) a decoded image must keep for Resize(resize) never to upsample."""
    if resize is None:
        return None
    if isinstance(resize, int):
        return resize, resize
    return int(resize[1]), int(resize[0])


# ITU-R 601-2 luma, the grey level of PIL's convert("L") and of torchvision.
_LUMA = torch.tensor([0.299, 0.587, 0.114])


def _grey(image: torch.Tensor) -> torch.Tensor:
    return torch.tensordot(_LUMA, image, dims=1).unsqueeze(0)


def _hue(image: torch.Tensor, factor: float) -> torch.Tensor:
    """torchvision's (PIL's) hue shift, on a float image in [0, 255]."""
    pil = F2.to_pil_image(image.round().to(torch.uint8))
    return F2.pil_to_tensor(F.adjust_hue(pil, factor)).float()


def _pixelwise_jitter(index: int, image: torch.Tensor, factor: float) -> torch.Tensor:
    """Brightness (0), saturation (2) or hue (3) as ColorJitter applies them, on floats."""
    if index == 0:
        return image.mul(factor).clamp_(0, 255)
    if index == 2:
        grey = _grey(image)
        return image.sub(grey).mul_(factor).add_(grey).clamp_(0, 255)
    return _hue(image, factor)


def jitter_crop(crop: torch.Tensor, image: torch.Tensor, params) -> torch.Tensor:
    """ColorJitter with ``params`` (from ``T.ColorJitter.get_params``) applied to ``crop``, a crop
    of ``image``, as if applied to the whole image before cropping.

    PIL's ImageEnhance rules, which torchvision uses: each step blends with black, the mean grey
    or the pixel's grey, then clips to [0, 255]; computed in float32 until the last step. Contrast
    blends with the mean grey of the whole image (given the steps before it), not of the crop.
    """
    order, *factors = params
    crop = crop.float()
    whole = None
    if factors[1] is not None:
        step = max(1, min(image.shape[-2:]) // _MEAN_SAMPLE_SIDE)
        whole = image[:, ::step, ::step].float()
    for index in order.tolist():
        factor = factors[index]
        if factor is None:
            continue
        if index == 1:
            mean = float(int(_grey(whole).mean() + 0.5))
            crop = crop.sub(mean).mul_(factor).add_(mean).clamp_(0, 255)
            whole = None
        else:
            crop = _pixelwise_jitter(index, crop, factor)
            whole = None if whole is None else _pixelwise_jitter(index, whole, factor)
    return crop.round_().to(torch.uint8)


class TrainTransform:
    """[Resize] -> [ColorJitter] -> RandomResizedCrop -> [horizontal flip], fused (module doc)."""

    def __init__(
        self,
        crop_size: int,
        resize: Resize = None,
        color_jitter: Sequence[float] | None = None,
        scale: Sequence[float] = (0.16, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        hflip: bool = True,
    ):
        self.crop_size, self.resize = crop_size, resize
        # torchvision's own ColorJitter holds the ranges; its get_params draws the factors.
        self.color_jitter = T.ColorJitter(*color_jitter) if color_jitter is not None else None
        self.scale, self.ratio, self.hflip = tuple(scale), tuple(ratio), hflip
        self.min_decode_size = min_decode_size(resize)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        resized_height, resized_width = resized_size(height, width, self.resize)
        jitter = None
        if self.color_jitter is not None:
            j = self.color_jitter
            jitter = T.ColorJitter.get_params(j.brightness, j.contrast, j.saturation, j.hue)
        top, left, h, w = T.RandomResizedCrop.get_params(
            torch.empty(0, resized_height, resized_width), self.scale, self.ratio
        )
        y_scale, x_scale = height / resized_height, width / resized_width
        y0, x0 = round(top * y_scale), round(left * x_scale)
        y1 = max(y0 + 1, round((top + h) * y_scale))
        x1 = max(x0 + 1, round((left + w) * x_scale))
        crop = F2.resized_crop(image, y0, x0, y1 - y0, x1 - x0, [self.crop_size] * 2, antialias=True)
        if jitter is not None:
            crop = jitter_crop(crop, image, jitter)
        if self.hflip and torch.rand(1) < 0.5:
            crop = F2.horizontal_flip(crop)
        return crop


class TestTransform:
    """[Resize] -> CenterCrop(crop_size)."""

    def __init__(self, crop_size: int, resize: Resize = None):
        self.crop_size, self.resize = crop_size, resize
        self.min_decode_size = min_decode_size(resize)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if self.resize is not None:
            size = resized_size(*image.shape[-2:], self.resize)
            image = F2.resize(image, list(size), antialias=True)
        return F2.center_crop(image, [self.crop_size] * 2)
