"""The embedded glyph dataset: deterministic, class-disjoint, one class per visual class, in the
prepared format of every dataset (dml_bench.data.split_files), written by the same writers."""

import json

import numpy as np
import pytest
import torch

from dml_bench import builders
from dml_bench.data import RetrievalDataset, glyphs
from dml_bench.data.glyphs import prepare_glyphs, render_glyphs, visual_classes
from dml_bench.data.split_files import Marker, read_marker, read_split, split_file, write_marker, write_splits
from dml_bench.runtime.errors import user_error_of
from tests.helpers.config import compose_config

# Look-alikes of the issue that reported them (Latin, Greek, Cyrillic), and characters that look
# like none of them.
LOOK_ALIKES = ["AΑА", "BΒВ", "CС", "OΟО", "PΡР", "ΠП", "oοо"]
DISTINCT = ["Ж", "7", "ф", "g", "Ω"]


def test_rendering_is_deterministic_and_has_many_classes():
    # Characters among which renderings are dropped as near-duplicates: the same ones each time.
    images_a, labels_a, _ = render_glyphs(0, 16, renderings_per_font=2, min_per_class=1, chars="Oo|lI-_")
    images_b, labels_b, _ = render_glyphs(0, 16, renderings_per_font=2, min_per_class=1, chars="Oo|lI-_")
    assert np.array_equal(images_a, images_b) and np.array_equal(labels_a, labels_b)
    images, labels, chars = render_glyphs(seed=0, image_size=16, renderings_per_font=1, min_per_class=10)
    assert len(chars) > 150 and len(set("".join(chars))) == len("".join(chars))  # each character once
    assert np.bincount(labels).min() >= 10
    assert all(img.any() for img in images)  # no blank or missing-glyph renderings


def test_characters_that_render_alike_are_one_class_and_others_are_not():
    chars = [c for group in LOOK_ALIKES + DISTINCT for c in group]
    images, labels, classes = render_glyphs(seed=0, image_size=32, renderings_per_font=1, min_per_class=1, chars=chars)
    assert sorted(classes) == sorted(LOOK_ALIKES + DISTINCT)
    # A class holds the renderings of all its characters: each character's alone, one per font.
    alone = {c: len(render_glyphs(0, 32, 1, 1, chars=[c])[0]) for c in "AΑАЖ"}
    counts = np.bincount(labels)
    assert counts[classes.index("AΑА")] == alone["A"] + alone["Α"] + alone["А"]
    assert counts[classes.index("Ж")] == alone["Ж"]


def test_visual_classes_join_pairs_alike_in_half_the_fonts_and_chain_them():
    """Hand-made renderings: a = b in 2 of 3 fonts, b = e in the one font that has both, c = d in
    1 of 2 fonts (half: joined), a = c in 1 of 3 (not joined); f alike to nothing."""
    ink = {name: np.full((4, 4), value, np.uint8) for name, value in zip("abcdef", (10, 50, 90, 130, 170, 210))}
    fonts = [
        {"a": ink["a"], "b": ink["a"], "c": ink["a"], "d": ink["d"], "f": ink["f"]},
        {"a": ink["a"], "b": ink["a"], "c": ink["c"], "d": ink["c"], "e": ink["a"]},
        {"a": ink["a"] + 1, "b": ink["b"], "c": ink["c"], "f": ink["f"]},  # a + 1: within the tolerance of a
    ]
    assert visual_classes(fonts, list("abcdef")) == ["abe", "cd", "f"]


def test_prepared_folder_is_a_class_disjoint_retrieval_split(tmp_path):
    root = prepare_glyphs(tmp_path / "glyphs", image_size=16, renderings_per_font=1)
    train, test = RetrievalDataset(root, "train"), RetrievalDataset(root, "test")
    assert not set(train.labels) & set(test.labels)
    # classes.txt: every class's code points; each look-alike set is one class, so on one side.
    listed = {int(line.split()[0]): line.split() for line in (root / "classes.txt").read_text("utf-8").splitlines()}
    assert set(listed) == set(train.labels) | set(test.labels)
    assert all(fields[-1] == "".join(chr(int(p[2:], 16)) for p in fields[1:-1]) for fields in listed.values())
    by_chars = {fields[-1]: index for index, fields in listed.items()}
    assert set(LOOK_ALIKES) <= set(by_chars)
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
    settings = {"version": glyphs.FORMAT_VERSION, "seed": 0, "image_size": 8, "renderings_per_font": 2,
                "min_per_class": 10}
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


def test_a_folder_of_another_version_is_rendered_again_by_a_run(tmp_path, monkeypatch):
    """A folder rendered by an earlier version (one class per code point) is never used silently:
    building a run's datasets renders it again; hand-written split files without a marker stay."""
    monkeypatch.setattr(glyphs, "render_glyphs", _few_glyphs)
    root = tmp_path / "glyphs"
    overrides = [f"dataset.root={root}", "dataset.prepare.image_size=8"]
    old = {"version": glyphs.FORMAT_VERSION - 1, "seed": 0, "image_size": 8, "renderings_per_font": 2,
           "min_per_class": 10}
    write_splits(root, {"train": [("images/old/0.png", 0)] * 2, "test": [("images/old/1.png", 1)] * 2})
    write_marker(root, "glyphs", old)
    datasets = builders.build_datasets(compose_config(overrides))
    assert read_marker(root).settings["version"] == glyphs.FORMAT_VERSION
    assert sorted(set(datasets["train"].labels)) == [0, 1] and len(datasets["query"]) == 4

    stale = root / "images" / "old"
    stale.mkdir()
    write_marker(root, "glyphs", old)
    builders.build_datasets(compose_config(overrides))
    assert not stale.exists()  # the earlier version's images go with its splits

    write_marker(root, "cub200")  # another dataset's folder: refused, left as it is
    with pytest.raises(Exception) as caught:  # Hydra's InstantiationException: the entry points unwrap it
        builders.build_datasets(compose_config(overrides))
    assert "holds the prepared dataset 'cub200', not the glyphs" in str(user_error_of(caught.value))
    assert split_file(root, "train").is_file()

    (root / ".prepared").unlink()  # split files of the user's own: used as they are
    write_splits(root, {"train": [(f"images/000/0000{i}.png", 0) for i in (0, 1)],
                        "test": [("images/002/00004.png", 2)] * 2})
    datasets = builders.build_datasets(compose_config(overrides))
    assert len(datasets["train"]) == 2 and read_marker(root) is None
