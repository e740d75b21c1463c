"""Dataset copies come from anywhere: their split files, archives and images never make dml_bench
read or write outside the dataset folder, or fill the disk; embedded data prepared with other
settings is prepared again, one process at a time. Each file here is crafted as a careless or
hostile copy would be."""

import io
import os
import subprocess
import sys
import tarfile
import time
import zipfile

import pytest
from omegaconf import OmegaConf
from PIL import Image

from dml_bench.data.cache import build_cache, cache_dir, cached_file
from dml_bench.data.embedded import prepare_embedded
from dml_bench.data.prepare.extract import MAX_RATIO, safe_extract
from dml_bench.data.retrieval_dataset import RetrievalDataset
from dml_bench.data.split_files import read_marker, read_split
from dml_bench.prepare_data import main as prepare_data
from dml_bench.runtime.errors import UserError
from tests.helpers.config import ROOT
from tests.helpers.payloads import one_paragraph
from tests.helpers.tiny_runs import tiny_csv


def with_rows(data, *rows: str):
    """``data``'s splits/train.csv with ``rows`` (``path,label``) appended."""
    split = data / "splits" / "train.csv"
    split.write_text(split.read_text() + "".join(f"{row}\n" for row in rows))
    return split


def elsewhere(tmp_path):
    """An image outside the dataset folder, which a split file must not reach."""
    (tmp_path / "elsewhere").mkdir()
    Image.new("RGB", (20, 20), (1, 2, 3)).save(tmp_path / "elsewhere" / "x.png")
    return tmp_path / "elsewhere" / "x.png"


@pytest.mark.parametrize("listed", ["../elsewhere/x.png", "images/../../elsewhere/x.png", "ABSOLUTE"])
def test_a_split_file_path_outside_the_dataset_is_refused_naming_file_and_line(tmp_path, listed):
    data = tiny_csv(tmp_path / "data")
    outside = elsewhere(tmp_path)
    listed = str(outside) if listed == "ABSOLUTE" else listed
    split = with_rows(data, f"{listed},0")
    with pytest.raises(UserError) as raised:
        read_split(split)
    assert one_paragraph(str(raised.value)).startswith(
        f"{split}, line 18: the image path {listed!r} leads outside the dataset folder {data} (an absolute path, "
        "or '..' that climbs out), so it is not read.")
    assert "dataset.allow_outside_root=true" in str(raised.value)
    allowed = RetrievalDataset(data, "train", allow_outside_root=True)  # the explicit option reads it
    assert allowed.load_image(len(allowed) - 1).shape == (3, 20, 20)


def test_verify_and_cache_stay_in_the_dataset_folder(tmp_path, capsys):
    data = tiny_csv(tmp_path / "data", train_images=4, test_images=4)
    outside = elsewhere(tmp_path)
    with_rows(data, f"{outside},0", "../elsewhere/x.png,1")
    assert prepare_data(["csv", "--root", str(data), "--verify"]) == 1
    assert "leads outside the dataset folder" in capsys.readouterr().err
    before = sorted(outside.parent.iterdir())
    build_cache(data, 16, workers=1, allow_outside_root=True)
    assert sorted(outside.parent.iterdir()) == before  # nothing written beside the outside image
    folder = cache_dir(data, 16)
    for listed in (str(outside), "../elsewhere/x.png"):
        cached = cached_file(folder, listed)
        assert cached.is_file() and folder.resolve() in cached.resolve().parents


def test_a_split_file_with_a_byte_order_mark_is_read(tmp_path):
    data = tiny_csv(tmp_path / "data")
    split = data / "splits" / "train.csv"
    plain = read_split(split)
    split.write_bytes(b"\xef\xbb\xbf" + split.read_bytes())  # Excel's "CSV UTF-8"
    assert read_split(split) == plain


def gzipped_tar(path, members: dict[str, int]):
    """A .tgz whose members are ``size`` zero bytes each: tiny on disk, large once extracted."""
    with tarfile.open(path, "w:gz") as tar:
        for name, size in members.items():
            info = tarfile.TarInfo(name)
            info.size = size
            tar.addfile(info, io.BytesIO(bytes(size)))
    return path


def test_a_decompression_bomb_is_refused_before_it_fills_the_disk(tmp_path):
    archive = gzipped_tar(tmp_path / "images.tgz", {"images/a.jpg": 1000, "images/bomb.jpg": 96 * 2**20})
    assert 96 * 2**20 > MAX_RATIO * archive.stat().st_size  # a ratio far past any image archive's
    with pytest.raises(UserError) as raised:
        safe_extract(archive, tmp_path / "out")
    message = one_paragraph(str(raised.value))
    assert message.startswith(f"Refusing to extract {archive}: with its member 'images/bomb.jpg' its content reaches "
                              "0.09 GiB from 0.00 GiB of archive, past the bound of 0.06 GiB")
    assert not (tmp_path / "out" / "images" / "bomb.jpg").exists()


def test_a_zip_bomb_is_refused_before_anything_is_written(tmp_path):
    archive = tmp_path / "img.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("img/a.jpg", b"\xff" * 10)
        zf.writestr("img/bomb.jpg", bytes(96 * 2**20))
    with pytest.raises(UserError, match=rf"^Refusing to extract {archive}: with its member 'img/bomb.jpg'"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out" / "img").exists()


def test_a_chain_of_links_that_each_look_inside_cannot_lead_out(tmp_path):
    """``x/y -> ..`` is inside (x/..), and so is ``x/y/z -> ..`` (x/y/..) as text; but x/y is the
    root once extracted, so z would point to the root's parent, and z/evil land outside."""
    archive = tmp_path / "chain.tar"
    with tarfile.open(archive, "w") as tar:
        for name, target in (("x/y", ".."), ("x/y/z", "..")):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
        info = tarfile.TarInfo("x/y/z/evil")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    with pytest.raises(UserError) as raised:
        safe_extract(archive, tmp_path / "out")
    assert one_paragraph(str(raised.value)).startswith(
        f"Refusing to extract {archive}: its member 'x/y/z' is a link to '..', which the links before it lead "
        "outside the folder")
    assert not (tmp_path / "evil").exists() and not (tmp_path / "z").exists()


def two_images(root, size: int, log):
    return OmegaConf.create({"name": "two_images", "root": str(root), "train_split": "train", "prepare": {
        "_target_": "tests.helpers.preparers.prepare_two_images", "size": size, "log": str(log), "seconds": 0}})


def test_data_prepared_with_other_settings_is_prepared_again(tmp_path):
    log = tmp_path / "log"
    prepare_embedded(two_images(tmp_path / "data", 8, log))
    prepare_embedded(two_images(tmp_path / "data", 8, log))  # the same settings: kept
    prepare_embedded(two_images(tmp_path / "data", 12, log))  # other settings: written again
    assert [line.split()[0] for line in log.read_text().splitlines()] == ["start", "wrote", "start", "kept",
                                                                          "start", "wrote"]
    assert read_marker(tmp_path / "data").settings == {"size": 12}
    assert Image.open(tmp_path / "data" / "images" / "0.png").size == (12, 12)


def test_two_processes_preparing_one_folder_take_turns(tmp_path):
    log, root = tmp_path / "log", tmp_path / "data"
    code = ("import sys; from omegaconf import OmegaConf; from dml_bench.data.embedded import prepare_embedded\n"
            "prepare_embedded(OmegaConf.create({'root': sys.argv[1], 'train_split': 'train', 'name': 'two_images', "
            "'prepare': {'_target_': 'tests.helpers.preparers.prepare_two_images', 'size': 8, 'log': sys.argv[2]}}))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen([sys.executable, "-c", code, str(root), str(log)], env=env, cwd=ROOT)
    while not (log.exists() and log.read_text()):  # the first is preparing (it takes a second)
        assert first.poll() is None
        time.sleep(0.01)
    second = subprocess.Popen([sys.executable, "-c", code, str(root), str(log)], env=env, cwd=ROOT)
    assert first.wait(timeout=60) == 0 and second.wait(timeout=60) == 0
    lines = [line.split() for line in log.read_text().splitlines()]
    assert [line[0] for line in lines] == ["start", "wrote", "start", "kept"]  # one after the other, once
    assert lines[0][1] == lines[1][1] == str(first.pid) and lines[2][1] == lines[3][1] == str(second.pid)
