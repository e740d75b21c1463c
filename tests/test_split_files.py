"""The prepared format (dml_bench.data.split_files): one reader of split files for the training
dataset, --verify and --cache alike, one atomic writer, one marker format."""

import pytest
from PIL import Image

from dml_bench.data import RetrievalDataset
from dml_bench.data.prepare import verify_images
from dml_bench.data.split_files import (
    Marker,
    Row,
    listed_images,
    read_marker,
    read_split,
    split_file,
    write_marker,
    write_splits,
)
from dml_bench.runtime.errors import UserError


def write_csv(root, split, text):
    path = split_file(root, split)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_the_header_names_the_columns_in_any_order_with_others_ignored(tmp_path):
    for image in ("a/1.png", "b/2.png"):
        (tmp_path / image).parent.mkdir(exist_ok=True)
        Image.new("RGB", (4, 4)).save(tmp_path / image)
    write_csv(tmp_path, "train", "label,path,note\n3,a/1.png,x\n\n5,b/2.png,y\n")
    rows = [Row("a/1.png", 3), Row("b/2.png", 5)]
    assert read_split(split_file(tmp_path, "train")) == rows
    dataset = RetrievalDataset(tmp_path, "train")  # the training dataset reads it the same way
    assert (dataset.paths, dataset.labels) == (["a/1.png", "b/2.png"], [3, 5])
    assert listed_images(tmp_path) == ["a/1.png", "b/2.png"]
    assert verify_images(tmp_path)[:2] == (2, [])  # --verify too (and --cache: test_cache.py)


@pytest.mark.parametrize("text, message", [
    ("image,class\na.png,1\n", r"must start with the header 'path,label', got \['image', 'class'\]"),
    ("", "must start with the header 'path,label', got None"),
    ("path,label\n", "lists no images"),
    ("path,label\na.png,1\nb.png,bird\n", r"line 3: the label 'bird' of 'b.png' is not an integer"),
    ("path,label\na.png\n", r"line 2: the label None of 'a.png' is not an integer"),
])
def test_a_malformed_split_file_is_a_user_error_naming_it(tmp_path, text, message):
    path = write_csv(tmp_path, "test", text)
    with pytest.raises(UserError, match=message) as err:
        read_split(path)
    assert str(path) in str(err.value)
    with pytest.raises(UserError, match=message):
        RetrievalDataset(tmp_path, "test")


def test_a_missing_split_file_or_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_split(split_file(tmp_path, "train"))
    with pytest.raises(UserError, match="holds no split files: prepare the dataset first"):
        listed_images(tmp_path)


def test_split_files_are_written_whole_or_not_at_all(tmp_path):
    write_splits(tmp_path, {"train": [("a.png", 1)], "test": [Row("b.png", 2)]})
    assert split_file(tmp_path, "train").read_text() == "path,label\na.png,1\n"
    assert read_split(split_file(tmp_path, "test")) == [Row("b.png", 2)]

    def rows_then_failure():
        yield ("c.png", 3)
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        write_splits(tmp_path, {"train": rows_then_failure()})
    assert split_file(tmp_path, "train").read_text() == "path,label\na.png,1\n"  # the old file, whole
    assert sorted(p.name for p in (tmp_path / "splits").iterdir()) == ["test.csv", "train.csv"]


def test_the_marker_holds_the_name_then_the_settings(tmp_path):
    assert read_marker(tmp_path) is None
    write_marker(tmp_path, "cub200")
    assert (tmp_path / ".prepared").read_text() == "cub200\n"
    assert read_marker(tmp_path) == Marker("cub200")
    write_marker(tmp_path, "glyphs", {"seed": 0, "image_size": 32})
    assert (tmp_path / ".prepared").read_text() == 'glyphs\n{"image_size": 32, "seed": 0}\n'
    assert read_marker(tmp_path) == Marker("glyphs", {"seed": 0, "image_size": 32})
    assert [p.name for p in tmp_path.iterdir()] == [".prepared"]
    # The glyph preparer's earlier marker (one JSON line) names no dataset.
    (tmp_path / ".prepared").write_text('{"version": 1, "seed": 0}')
    assert read_marker(tmp_path) == Marker('{"version": 1, "seed": 0}')
