"""--verify reports exact duplicates: same decoded pixels, whatever the files."""

import numpy as np
import pytest
from PIL import Image

from dml_bench.data.prepare.verify import verify_images
from dml_bench.prepare_data import main


def image(seed):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (6, 5, 3), dtype=np.uint8))


def write_folder(root):
    """train: a, its lossless copy b.bmp (class 0), c and its copy d under other classes (1, 2),
    e (class 3); test: f, a copy of e (class 7), and a itself listed again (class 8)."""
    (root / "images").mkdir(parents=True)
    (root / "splits").mkdir()
    for name, seed in (("a.png", 0), ("b.bmp", 0), ("c.png", 1), ("d.png", 1), ("e.png", 2), ("f.png", 2)):
        image(seed).save(root / "images" / name)
    (root / "splits" / "train.csv").write_text(
        "path,label\nimages/a.png,0\nimages/b.bmp,0\nimages/c.png,1\nimages/d.png,2\nimages/e.png,3\n")
    (root / "splits" / "test.csv").write_text("path,label\nimages/f.png,7\nimages/a.png,8\n")


def paths(groups):
    return sorted(sorted(entry.path for entry in group) for group in groups)


def test_duplicates_within_a_class_across_classes_and_across_splits(tmp_path):
    write_folder(tmp_path)
    checked, bad, duplicates, _ = verify_images(tmp_path)
    assert (checked, bad) == (6, [])
    assert paths(duplicates["within a class"]) == [["images/a.png", "images/b.bmp"]]
    assert paths(duplicates["across classes"]) == [["images/c.png", "images/d.png"]]
    assert paths(duplicates["across splits"]) == [["images/a.png", "images/a.png", "images/b.bmp"],
                                                 ["images/e.png", "images/f.png"]]


def test_a_folder_without_duplicates_reports_none(tmp_path):
    write_folder(tmp_path)
    (tmp_path / "splits" / "train.csv").write_text("path,label\nimages/a.png,0\nimages/c.png,1\n")
    (tmp_path / "splits" / "test.csv").write_text("path,label\nimages/e.png,7\n")
    assert all(groups == [] for groups in verify_images(tmp_path).duplicates.values())


def test_the_command_line_reports_counts_and_paths_for_a_csv_folder(tmp_path, capsys):
    write_folder(tmp_path)
    assert main(["csv", "--root", str(tmp_path), "--verify"]) == 0
    out = capsys.readouterr().out
    assert "within a class: 1 groups, 2 images" in out
    assert "across classes: 1 groups, 2 images" in out
    assert "across splits: 2 groups, 5 images" in out
    assert "images/c.png (train, class 1) = images/d.png (train, class 2)" in out
    assert "All 6 images decode." in out


def test_csv_needs_something_to_do(tmp_path, capsys):
    write_folder(tmp_path)
    assert main(["csv", "--root", str(tmp_path)]) == 1
    assert "nothing to prepare; add --verify or --cache" in capsys.readouterr().err


@pytest.mark.parametrize("folder", ["missing", "empty"])
def test_verify_of_a_folder_without_split_files_fails(tmp_path, capsys, folder):
    """A mistyped --root must not pass as "All 0 images decode"."""
    root = tmp_path / folder
    if folder == "empty":
        root.mkdir()
    assert main(["csv", "--root", str(root), "--verify"]) == 1
    err = capsys.readouterr().err
    assert ("does not exist" if folder == "missing" else "has no split files") in err and "All 0" not in err
