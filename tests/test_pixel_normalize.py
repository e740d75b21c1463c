"""uint8 batches are normalised once, on the device, inside the model."""

import copy

import pytest
import torch
from torchvision import transforms as T

from dml_bench.models import Embedder, PixelNormalize, SmallConvNet
from dml_bench.models.pixel_normalize import IMAGENET_MEAN, IMAGENET_STD


@pytest.mark.parametrize(("mean", "std"), [(IMAGENET_MEAN, IMAGENET_STD), ((0.5,) * 3, (0.5,) * 3)])
def test_uint8_becomes_what_to_tensor_and_normalize_give(mean, std):
    images = torch.randint(0, 256, (4, 3, 9, 7), dtype=torch.uint8)
    expected = T.Normalize(mean, std)(images.double() / 255).float()
    got = PixelNormalize(mean, std)(images)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_float_input_passes_through_unchanged():
    images = torch.randn(2, 3, 5, 5)
    assert PixelNormalize()(images) is images


def test_channels_last_is_kept():
    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
    assert PixelNormalize()(images).is_contiguous(memory_format=torch.channels_last)


def test_the_embedder_normalises_exactly_once():
    torch.manual_seed(0)
    model = Embedder(SmallConvNet((4, 8)), embedding_size=6, mean=(0.2, 0.3, 0.4), std=(0.5, 0.6, 0.7)).eval()
    images = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    normalised = T.Normalize((0.2, 0.3, 0.4), (0.5, 0.6, 0.7))(images.float() / 255)
    torch.testing.assert_close(model(images), model(normalised))
    bare = copy.deepcopy(model.backbone)
    torch.testing.assert_close(model(images), model.linear(bare(normalised)))


def test_normalisation_constants_are_not_in_checkpoints():
    state = Embedder(SmallConvNet((4,)), embedding_size=2).state_dict()
    assert not any(key.startswith("input_norm") for key in state)
