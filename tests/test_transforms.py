"""The uint8 transforms draw the plain torchvision pipeline's augmentations: under one seed they
give its crop box, flip and jitter, so outputs differ only by resampling and rounding."""

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image
from torchvision import transforms as T

from dml_bench.bench.synthetic import photo_like
from dml_bench.data import transforms
from dml_bench.data.decode import read_rgb
from dml_bench.data.transforms import TrainTransform, resized_size
from tests.helpers.config import compose_config

# Mean absolute difference (0-255 levels) below which two outputs are the same augmentation:
# measured 0.03-4.4 for the same parameters, 26-46 for different ones.
SAME = 6.0


def plain_train(resize, color_jitter, scale, ratio, crop_size=224, hflip=True):
    """The recipe exactly as a torchvision Compose on PIL images (the reference)."""
    steps = [T.Resize(resize if isinstance(resize, int) else tuple(resize))] if resize is not None else []
    steps += [T.ColorJitter(*color_jitter)] if color_jitter is not None else []
    steps += [T.RandomResizedCrop(crop_size, scale=tuple(scale), ratio=tuple(ratio))]
    steps += [T.RandomHorizontalFlip()] if hflip else []
    return T.Compose(steps + [T.PILToTensor()])


def mean_difference(plain, ours, path, seed) -> float:
    torch.manual_seed(seed)
    with Image.open(path) as image:
        expected = plain(image.convert("RGB")).float()
    torch.manual_seed(seed)
    got = ours(read_rgb(path, ours.min_decode_size))
    assert got.dtype == torch.uint8 and got.shape == expected.shape
    return (got.float() - expected).abs().mean().item()


@pytest.mark.parametrize("size", [(300, 200), (200, 300), (257, 256), (1000, 750)])
@pytest.mark.parametrize("resize", [256, (256, 256), (100, 300)])
def test_resized_size_is_what_resize_makes(size, resize):
    image = Image.new("RGB", size)
    expected = T.Resize(resize)(image).size
    assert resized_size(size[1], size[0], resize) == (expected[1], expected[0])


# (name, image size, resize, color_jitter, ratio): the four recipes, portrait and large images.
RECIPES = [
    ("cub", (500, 375), 256, (0.25, 0.25, 0.25, 0.0), (3 / 4, 4 / 3)),
    ("cub-portrait", (375, 500), 256, (0.25, 0.25, 0.25, 0.0), (3 / 4, 4 / 3)),
    ("cars-large", (1000, 750), (256, 256), (0.3, 0.3, 0.3, 0.1), (1.0, 1.0)),
    ("sop", (640, 480), (256, 256), None, (3 / 4, 4 / 3)),
    ("inshop", (256, 256), None, None, (3 / 4, 4 / 3)),
]


@pytest.mark.parametrize(("size", "resize", "jitter", "ratio"), [r[1:] for r in RECIPES], ids=[r[0] for r in RECIPES])
def test_same_seed_same_augmentation_as_the_plain_pipeline(tmp_path, size, resize, jitter, ratio):
    path = tmp_path / "photo.jpg"
    photo_like(*size, seed=7).save(path, quality=90)
    plain = plain_train(resize, jitter, (0.16, 1.0), ratio)
    ours = TrainTransform(224, resize=resize, color_jitter=jitter, ratio=ratio)
    same = [mean_difference(plain, ours, path, seed) for seed in range(6)]
    assert max(same) < SAME, same
    # and the comparison can fail: another seed is another augmentation
    torch.manual_seed(100)
    other = ours(read_rgb(path, ours.min_decode_size)).float()
    torch.manual_seed(0)
    with Image.open(path) as image:
        assert (plain(image.convert("RGB")).float() - other).abs().mean() > 4 * SAME


def test_contrast_blends_with_the_whole_image_mean_not_the_crop_mean(tmp_path):
    pixels = np.full((375, 500, 3), 40, np.uint8)
    pixels[:, 250:] = 210  # a crop inside one half has a mean far from the whole image's
    path = tmp_path / "halves.png"
    Image.fromarray(pixels).save(path)
    jitter = (0.0, (0.5, 0.5), 0.0, 0.0)
    plain = plain_train(256, jitter, (0.02, 0.02), (1.0, 1.0))
    ours = TrainTransform(224, resize=256, color_jitter=jitter, scale=(0.02, 0.02), ratio=(1.0, 1.0))
    for seed in range(4):
        assert mean_difference(plain, ours, path, seed) < 2.0


def test_test_transform_is_resize_then_center_crop(tmp_path):
    path = tmp_path / "photo.jpg"
    photo_like(1000, 750, seed=8).save(path, quality=90)
    for resize in (256, (256, 256)):
        plain = T.Compose([T.Resize(resize), T.CenterCrop(224), T.PILToTensor()])
        ours = transforms.TestTransform(224, resize=resize)
        assert mean_difference(plain, ours, path, seed=0) < 2.0


def test_small_images_are_padded_by_center_crop_as_before():
    image = torch.full((3, 20, 30), 200, dtype=torch.uint8)
    out = transforms.TestTransform(32)(image)
    assert out.shape == (3, 32, 32) and out[:, 0].eq(0).all() and out[:, 16, 16].eq(200).all()


@pytest.mark.parametrize("dataset", ["cub200", "cars196", "sop", "inshop", "glyphs"])
def test_recipe_configs_keep_their_augmentation_parameters(tmp_path, dataset):
    """Each dataset config builds our transform with its recipe's parameters, and that transform
    draws what the plain Compose built from the same keys draws."""
    cfg = compose_config([f"dataset={dataset}", "dataset.root=unused"]).dataset
    train = cfg.train_transform
    ours = instantiate(train)
    assert (ours.crop_size, ours.scale, ours.ratio, ours.hflip) == (
        train.crop_size, tuple(train.scale), tuple(train.ratio), train.get("hflip", True))
    path = tmp_path / "photo.jpg"
    photo_like(500, 375, seed=9).save(path, quality=90)
    plain = plain_train(train.get("resize"), train.get("color_jitter"), train.scale, train.ratio,
                        train.crop_size, train.get("hflip", True))
    assert max(mean_difference(plain, ours, path, seed) for seed in range(3)) < SAME
