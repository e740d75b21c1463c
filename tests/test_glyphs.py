"""The embedded glyph dataset: deterministic, class-disjoint, in the standard prepared format."""

import numpy as np
import torch

from dml_bench.data import RetrievalDataset
from dml_bench.data.glyphs import prepare_glyphs, render_glyphs


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
