"""Reading images: every mode becomes RGB, JPEGs shrink only as far as the first Resize allows,
and an unreadable file is a UserError naming it."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from dml_bench.bench.synthetic import photo_like
from dml_bench.data.decode import read_rgb
from dml_bench.data.retrieval_dataset import RetrievalDataset
from dml_bench.runtime.errors import UserError


def _pil_rgb(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.array(image.convert("RGB"))


def _hwc(tensor: torch.Tensor) -> np.ndarray:
    return tensor.permute(1, 2, 0).numpy()


MODES = [("RGB", "jpg"), ("L", "jpg"), ("CMYK", "jpg"), ("P", "png"), ("RGBA", "png"), ("LA", "png"),
         ("L", "png"), ("RGB", "bmp")]


@pytest.mark.parametrize(("mode", "ext"), MODES, ids=[f"{m}-{e}" for m, e in MODES])
def test_every_mode_becomes_the_rgb_pil_gives(tmp_path, mode, ext):
    path = tmp_path / f"image.{ext}"
    image = photo_like(40, 30, seed=1)
    image = image.quantize(16) if mode == "P" else image.convert(mode)
    image.save(path)
    decoded = read_rgb(path)
    assert decoded.dtype == torch.uint8 and decoded.shape == (3, 30, 40)
    np.testing.assert_array_equal(_hwc(decoded), _pil_rgb(path))


def _expected_draft_size(width, height, min_width, min_height):
    """The largest power-of-two reduction (up to 8) keeping both sides >= the minimum."""
    scale = next(s for s in (8, 4, 2, 1) if width >= s * min_width and height >= s * min_height)
    return -(-width // scale), -(-height // scale)


@pytest.mark.parametrize("min_size", [(256, 256), (100, 100), (400, 400), (600, 200), (20, 20)])
def test_jpegs_decode_smaller_only_down_to_the_minimum(tmp_path, min_size):
    path = tmp_path / "big.jpg"
    photo_like(1000, 750, seed=2).save(path, quality=90)
    decoded = read_rgb(path, min_size)
    width, height = decoded.shape[2], decoded.shape[1]
    assert (width, height) == _expected_draft_size(1000, 750, *min_size)
    assert width >= min_size[0] and height >= min_size[1]


def test_reduced_decoding_gives_what_resize_gives_up_to_resampling(tmp_path):
    path = tmp_path / "big.jpg"
    photo_like(1000, 750, seed=3).save(path, quality=90)
    resize = T.Resize(256)
    full = resize(torch.from_numpy(_pil_rgb(path)).permute(2, 0, 1)).float()
    reduced_input = read_rgb(path, (256, 256))
    assert reduced_input.shape[1:] == (375, 500)
    reduced = resize(reduced_input).float()
    assert full.shape == reduced.shape == (3, 256, 341)
    assert (full - reduced).abs().mean() < 2.0  # 0-255 levels; a misplaced image differs by ~40


def test_non_jpeg_files_ignore_the_minimum(tmp_path):
    path = tmp_path / "big.png"
    photo_like(600, 400, seed=4).save(path)
    assert read_rgb(path, (100, 100)).shape == (3, 400, 600)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "text"])
def test_an_unreadable_image_is_a_user_error_naming_the_file(tmp_path, damage):
    good = tmp_path / "good.jpg"
    photo_like(64, 48, seed=5).save(good, quality=90)
    data = good.read_bytes()
    content = {"truncated": data[: len(data) // 2], "garbage": data[:300] + bytes(2000),
               "text": b"not an image"}[damage]
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "bad.jpg").write_bytes(content)
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "train.csv").write_text("path,label\nimages/bad.jpg,3\n")
    dataset = RetrievalDataset(tmp_path, "train")
    with pytest.raises(UserError, match=r"Cannot read image .*images/bad\.jpg \(listed in .*train\.csv\)"):
        dataset[0]
