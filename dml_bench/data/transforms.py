"""Train and test image transforms, parametrised the way the paper's recipes differ per dataset.

train: [Resize] -> [ColorJitter] -> RandomResizedCrop(crop, scale, ratio) -> [flip] -> tensor
test:  [Resize] -> CenterCrop(crop) -> tensor
``resize`` is an int (shorter side) or a pair (exact height, width); None skips the resize.
"""

from collections.abc import Sequence

from torchvision import transforms as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _resize(resize):
    if resize is None:
        return []
    return [T.Resize(resize if isinstance(resize, int) else tuple(resize))]


def _to_tensor(mean: Sequence[float], std: Sequence[float]):
    return [T.ToTensor(), T.Normalize(mean=list(mean), std=list(std))]


def train_transform(
    crop_size: int,
    resize=None,
    color_jitter: Sequence[float] | None = None,
    scale: Sequence[float] = (0.16, 1.0),
    ratio: Sequence[float] = (3 / 4, 4 / 3),
    hflip: bool = True,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> T.Compose:
    steps = _resize(resize)
    if color_jitter is not None:
        steps.append(T.ColorJitter(*color_jitter))
    steps.append(T.RandomResizedCrop(crop_size, scale=tuple(scale), ratio=tuple(ratio)))
    if hflip:
        steps.append(T.RandomHorizontalFlip())
    return T.Compose(steps + _to_tensor(mean, std))


def test_transform(
    crop_size: int,
    resize=None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> T.Compose:
    return T.Compose(_resize(resize) + [T.CenterCrop(crop_size)] + _to_tensor(mean, std))
