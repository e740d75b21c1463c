"""The pre-resized image cache holds exactly what the recipe's first Resize makes of each image."""

import numpy as np
import pytest
from PIL import Image
from torchvision import transforms as T

from dml_bench.builders import build_datasets
from dml_bench.data.cache import (
    build_cache,
    cache_dir,
    cache_resize,
    cached_file,
    parse_size,
)
from dml_bench.data.prepare import prepare_dataset
from dml_bench.data.split_files import read_split
from dml_bench.data.splits import open_split
from dml_bench.prepare_data import main as prepare_main
from dml_bench.runtime.errors import UserError
from tests.helpers import session
from tests.helpers.config import compose_config
from tests.helpers.miniature_datasets import make_cub200_source, make_sop_source


@pytest.fixture(scope="module")
def cub_root(tmp_path_factory):
    """A prepared miniature CUB (grayscale and RGB JPEGs) with its recipe cache built by the CLI."""
    folder = tmp_path_factory.mktemp("cub")
    source = make_cub200_source(folder / "source", images_per_class=3)
    root = folder / "cub200"
    prepare_dataset("cub200", root, source=str(source.folder), check_standard_counts=False, skip_checksum=True)
    assert prepare_main(["cub200", "--root", str(root), "--cache"]) == 0
    return root


def listed_paths(root):
    return [row.path for split in ("train", "test") for row in read_split(root / "splits" / f"{split}.csv")]


def test_every_cached_image_equals_the_recipe_resize(cub_root):
    folder = cache_dir(cub_root, 256)
    assert folder.name == "resize-256" and (folder / ".complete").is_file()
    for path in listed_paths(cub_root):
        with Image.open(cub_root / path) as original:
            expected = np.asarray(T.Resize(256)(original.convert("RGB")))
        with Image.open(cached_file(folder, path)) as cached:
            assert cached.mode == "RGB"
            np.testing.assert_array_equal(np.asarray(cached), expected)


def test_an_interrupted_cache_is_completed(cub_root, tmp_path):
    folder = cache_dir(cub_root, (64, 48))
    build_cache(cub_root, (64, 48), workers=1)
    missing = cached_file(folder, listed_paths(cub_root)[0])
    missing.unlink()
    build_cache(cub_root, (64, 48), workers=1)
    with Image.open(missing) as image:
        assert image.size == (48, 64)


def test_training_reads_the_cache_when_asked(cub_root):
    cfg = compose_config(["dataset=cub200", f"dataset.root={cub_root}", "dataset.cache=true"])
    datasets = build_datasets(cfg)
    assert datasets["train"].cache_dir == cache_dir(cub_root, 256)
    image = datasets["query"].load_image(0)
    with Image.open(cub_root / datasets["query"].paths[0]) as original:
        expected = np.asarray(T.Resize(256)(original.convert("RGB")))
    np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), expected)
    assert datasets["train"][0][0].shape == (3, 224, 224)


def test_a_missing_cache_says_how_to_build_it(cub_root):
    with pytest.raises(UserError, match=r"prepare_data cub200 --root .* --cache 256x256"):
        open_split("cub200", cub_root, "train", cache_resize=(256, 256))


def test_cache_needs_a_resize():
    # The glyphs (no resize) the session prepared: the default root would prepare a larger set first.
    glyphs = [f"dataset.root={session.glyphs_root()}", *session.GLYPHS_PREPARE]
    with pytest.raises(UserError, match="dataset.cache=true needs a resize"):
        build_datasets(compose_config(["dataset.cache=true", *glyphs]))
    with pytest.raises(UserError, match="recipe has no Resize"):
        cache_resize("inshop", "recipe")
    # a folder of one's own: the size its runs resize to, which configs/dataset/csv.yaml sets
    csv_resize = compose_config(["dataset=csv", "dataset.root=x"]).dataset.test_transform.resize
    with pytest.raises(UserError, match=f"no recipe of its own.*{csv_resize} in configs/dataset/csv.yaml"):
        cache_resize("csv", "recipe")


def test_sizes_parse_and_bad_ones_are_user_errors():
    assert parse_size("256") == 256 and parse_size("256x128") == (256, 128)
    for bad in ("", "x", "0", "256x", "1x2x3", "big"):
        with pytest.raises(UserError, match="HEIGHTxWIDTH"):
            parse_size(bad)


def test_cmyk_images_are_cached_as_rgb(tmp_path):
    source = make_sop_source(tmp_path / "source")
    root = tmp_path / "sop"
    prepare_dataset("sop", root, source=str(source.folder), check_standard_counts=False, skip_checksum=True)
    folder = build_cache(root, (32, 32), workers=1)
    for path in listed_paths(root):
        with Image.open(cached_file(folder, path)) as image:
            assert image.mode == "RGB" and image.size == (32, 32)
