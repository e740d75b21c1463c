"""The embedded glyph dataset: deterministic, class-disjoint, in the prepared format of every dataset
(dml_bench.data.split_files), written by the same writers."""

import json

import numpy as np
import torch

from dml_bench.data import RetrievalDataset, glyphs
from dml_bench.data.glyphs import prepare_glyphs, render_glyphs
from dml_bench.data.split_files import Marker, read_marker, read_split, split_file, write_splits


def test_rendering_is_deterministic_and_has_many_classes():
    images_a, labels_a, chars = render_glyphs(seed=0, image_size=16, renderings_per_font=1, min_per_class=10)
    images_b, labels_b, _ = render_glyphs(seed=0, image_size=16, renderings_per_font=1, min_per_class=10)
    assert np.array_equal(images_a, images_b) and np.array_equal(labels_a, labels_b)
    assert len(chars) > 150
    assert np.bincount(labels_a).min() >= 10
    assert all(img.any() for img in images_a)  # no blank or missing-glyph renderings


def test_prepared_folder_is_a_class_disjoint_retrieval_split(tmp_path):
    root = prepare_glyphs(tmp_path / "glyphs", image_size=16, renderings_per_font=1)
    train, test = RetrievalDataset(root, "train"), RetrievalDataset(root, "test")
    assert not set(train.labels) & set(test.labels)
    assert abs(train.num_classes - test.num_classes) <= 1
    image, target, index = train[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 16, 16) and index == 0  # RGB tensor
    marker = (root / ".prepared").stat().st_mtime_ns
    prepare_glyphs(tmp_path / "glyphs", image_size=16, renderings_per_font=1)
    assert (root / ".prepared").stat().st_mtime_ns == marker  # second call is a no-op


def _few_glyphs(seed, image_size, renderings_per_font, min_per_class):
    """Two renderings of four characters, in render_glyphs' form, without rendering any font."""
    images = np.stack([np.full((image_size, image_size), 30 * i, np.uint8) for i in range(8)])
    return images, np.repeat(np.arange(4), 2), ["a", "b", "c", "d"]


def test_glyphs_are_written_by_the_writers_of_every_prepared_dataset(tmp_path, monkeypatch):
    monkeypatch.setattr(glyphs, "render_glyphs", _few_glyphs)
    written = []
    monkeypatch.setattr(glyphs, "write_splits", lambda root, rows: written.append(rows) or write_splits(root, rows))
    root = prepare_glyphs(tmp_path / "glyphs", image_size=8)
    assert len(written) == 1 and set(written[0]) == {"train", "test"}
    settings = {"version": 1, "seed": 0, "image_size": 8, "renderings_per_font": 2, "min_per_class": 10}
    assert read_marker(root) == Marker("glyphs", settings)
    assert (root / ".prepared").read_text().splitlines()[0] == "glyphs"
    for split, labels in (("train", [0, 0, 1, 1]), ("test", [2, 2, 3, 3])):
        assert split_file(root, split).read_text().startswith("path,label\n")
        rows = read_split(split_file(root, split))
        assert [row.label for row in rows] == labels and all((root / row.path).is_file() for row in rows)
    assert not list(root.rglob("*.tmp"))
    assert (root / "classes.txt").read_text(encoding="utf-8").splitlines()[0] == "0 U+0061 a"

    # Other settings, or the earlier one-line JSON marker: rendered again, and marked anew.
    prepare_glyphs(root, image_size=8, min_per_class=2)
    assert read_marker(root).settings["min_per_class"] == 2 and len(written) == 2
    (root / ".prepared").write_text(json.dumps(settings))
    prepare_glyphs(root, image_size=8)
    assert read_marker(root) == Marker("glyphs", settings) and len(written) == 3
    prepare_glyphs(root, image_size=8)
    assert len(written) == 3  # prepared: nothing written
