"""The benchmark preparers, end to end on miniature copies of the official files.

Downloads go through a loopback HTTP server started per test (127.0.0.1, port 0) that honours
Range requests and can cut its first response short.
"""

import http.server
import io
import re
import subprocess
import sys
import tarfile
import threading
from functools import partial
from pathlib import Path

import pytest
from scipy.io import loadmat

from dml_bench.data.benchmarks import BENCHMARKS
from dml_bench.data.prepare import prepare_dataset
from dml_bench.data.prepare.cars196 import annotation_rows
from dml_bench.data.prepare.download import download, file_md5
from dml_bench.data.prepare.extract import safe_extract
from dml_bench.data.split_files import Marker, read_marker, read_split
from dml_bench.prepare_data import main
from dml_bench.runtime.errors import UserError
from tests.helpers.miniature_datasets import MINIATURE_BUILDERS, write_zip

MINI = {"check_standard_counts": False, "skip_checksum": True}


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files, honouring ``Range: bytes=N-`` unless the server says otherwise."""

    def do_GET(self):
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        start = int(match[1]) if match and server.honour_range else 0
        if start:
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        if server.cut_after is not None:  # the first response breaks off mid-file
            body, server.cut_after = body[: server.cut_after], None
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    folder = tmp_path / "www"
    (folder / "mirror").mkdir(parents=True)
    srv = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(_RangeHandler, directory=str(folder))
    )
    srv.requests, srv.honour_range, srv.cut_after = [], True, None
    srv.folder = folder / "mirror"
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}/mirror"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


def _assert_splits(root: Path, expected: dict) -> None:
    found = {p.stem: read_split(p) for p in (root / "splits").glob("*.csv")}
    assert found == expected
    assert all((root / path).is_file() for rows in expected.values() for path, _ in rows)
    assert (root / "splits" / "train.csv").read_text().startswith("path,label\n")


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_prepare_over_http(name, server, tmp_path):
    mini = MINIATURE_BUILDERS[name](server.folder)
    root = tmp_path / name
    prepare_dataset(name, root, source=server.url + "/", **MINI)
    _assert_splits(root, mini.splits)
    assert sorted(p.name for p in (root / "downloads").iterdir()) == sorted(mini.files)
    assert (root / ".prepared").read_text() == f"{name}\n"
    assert read_marker(root) == Marker(name)


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_prepare_from_folder(name, tmp_path):
    mini = MINIATURE_BUILDERS[name](tmp_path)
    prepare_dataset(name, tmp_path / "root", source=str(tmp_path), **MINI)
    _assert_splits(tmp_path / "root", mini.splits)


def test_inshop_folder_in_the_drive_layout(tmp_path):
    mini = MINIATURE_BUILDERS["inshop"](tmp_path)
    for sub, name in (("Img", "img.zip"), ("Eval", "list_eval_partition.txt")):
        (tmp_path / sub).mkdir()
        (tmp_path / name).rename(tmp_path / sub / name)
    prepare_dataset("inshop", tmp_path / "root", source=str(tmp_path), **MINI)
    _assert_splits(tmp_path / "root", mini.splits)


def test_vehicleid_archive_with_its_folders_at_the_top(tmp_path):
    mini = MINIATURE_BUILDERS["vehicleid"](tmp_path, inner_folder="")
    prepare_dataset("vehicleid", tmp_path / "root", source=str(tmp_path), **MINI)
    _assert_splits(tmp_path / "root", mini.splits)
    small, medium, large = (mini.splits[f"test_{size}"] for size in ("small", "medium", "large"))
    assert set(small) < set(medium) < set(large) and mini.splits["train"][0][0] == "image/0000037.jpg"


def test_vehicleid_archive_without_its_lists_is_refused(tmp_path):
    write_zip(tmp_path / "VehicleID_V1.0.zip", {"VehicleID_V1.0/image/0000001.jpg": b"x"})
    with pytest.raises(UserError, match=r"No train_test_split/ folder in .* not the official VehicleID_V1.0.zip"):
        prepare_dataset("vehicleid", tmp_path / "root", source=str(tmp_path), **MINI)


def test_inaturalist_split_line_that_is_not_an_image_path_is_refused(tmp_path):
    MINIATURE_BUILDERS["inaturalist"](tmp_path)
    write_zip(tmp_path / "Inat_dataset_splits.zip", {
        "Inat_dataset_splits/Inaturalist_train_set1.txt": b"train_val2018/Plantae/7477/a.jpg\n",
        "Inat_dataset_splits/Inaturalist_test_set1.txt": b"train_val2018/Plantae/a.jpg\n",
    })
    with pytest.raises(UserError, match=r"Inaturalist_test_set1.txt: 'train_val2018/Plantae/a.jpg' is not an image "
                                        r"path like train_val2018/Plantae/7477/<name>.jpg"):
        prepare_dataset("inat", tmp_path / "root", source=str(tmp_path), **MINI)


def test_rerun_is_a_no_op(server, tmp_path):
    mini = MINIATURE_BUILDERS["cub200"](server.folder)
    root = tmp_path / "cub"
    prepare_dataset("cub200", root, source=server.url, **MINI)
    requests = len(server.requests)
    (server.folder / "CUB_200_2011.tgz").unlink()
    prepare_dataset("cub200", root, source=server.url, **MINI)
    assert len(server.requests) == requests
    _assert_splits(root, mini.splits)
    with pytest.raises(UserError, match="already holds the prepared dataset 'cub200'"):
        prepare_dataset("sop", root, source=server.url, **MINI)


def test_an_alias_prepares_the_benchmark_under_its_name(tmp_path, capsys):
    mini = MINIATURE_BUILDERS["cars196"](tmp_path / "source")
    root = tmp_path / "root"
    prepare_dataset("cars", root, source=str(mini.folder), **MINI)
    _assert_splits(root, mini.splits)
    assert read_marker(root) == Marker("cars196")
    # The CLI takes the alias too, and finds the folder prepared by its name.
    assert main(["cars", "--root", str(root), "--verify"]) == 0
    assert "All 8 images decode." in capsys.readouterr().out
    with pytest.raises(UserError, match=r"Unknown dataset 'car': choose one of cub200 \(or cub\), cars196 \(or cars\)"):
        prepare_dataset("car", root)


def test_checksum_mismatch_over_http(server, tmp_path):
    MINIATURE_BUILDERS["cub200"](server.folder)
    actual = file_md5(server.folder / "CUB_200_2011.tgz")
    with pytest.raises(UserError) as err:
        prepare_dataset("cub200", tmp_path / "root", source=server.url, check_standard_counts=False)
    message = str(err.value)
    for part in ("CUB_200_2011.tgz", actual, "97eceeb196236b17998738112f37df78", "--skip-checksum"):
        assert part in message
    assert list((tmp_path / "root" / "downloads").iterdir()) == []  # the bad download is gone


def test_files_put_in_downloads_by_hand(tmp_path):
    root = tmp_path / "root"
    mini = MINIATURE_BUILDERS["cars196"](root / "downloads")
    with pytest.raises(UserError, match=r"downloads/car_ims.tgz has MD5 .*--skip-checksum"):
        prepare_dataset("cars196", root, check_standard_counts=False)
    prepare_dataset("cars196", root, **MINI)
    _assert_splits(root, mini.splits)


def test_missing_files_say_what_to_obtain_and_where(tmp_path):
    with pytest.raises(UserError) as err:
        prepare_dataset("inshop", tmp_path / "root")
    downloads = str(tmp_path / "root" / "downloads")
    for part in ("img.zip", "list_eval_partition.txt", downloads, "--source"):
        assert part in str(err.value)
    MINIATURE_BUILDERS["cars196"](tmp_path)
    (tmp_path / "cars_annos.mat").unlink()
    with pytest.raises(UserError, match=f"cars_annos.mat not found in {tmp_path}"):
        prepare_dataset("cars196", tmp_path / "root", source=str(tmp_path), **MINI)


def test_cli_error_is_one_line_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "dml_bench.prepare_data", "cars196", "--root", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: Cars196 needs car_ims.tgz, cars_annos.mat")
    assert "Traceback" not in result.stderr


def test_cli_checks_the_standard_counts(tmp_path, capsys):
    MINIATURE_BUILDERS["cub200"](tmp_path)
    root = tmp_path / "root"
    assert main(["cub200", "--root", str(root), "--source", str(tmp_path), "--skip-checksum"]) == 1
    assert "train 4, test 4 images, but the full dataset has train 5,864" in capsys.readouterr().err
    assert not (root / "splits").exists() and not (root / ".prepared").exists()


def test_cli_help_documents_every_dataset(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for word in (*BENCHMARKS, "--source", "--skip-checksum", "--verify", "downloads/", ".prepared"):
        assert word in text


def test_verify_lists_every_undecodable_image(tmp_path, capsys):
    mini = MINIATURE_BUILDERS["sop"](tmp_path)  # includes CMYK JPEGs, which must pass
    root = tmp_path / "root"
    prepare_dataset("sop", root, source=str(tmp_path), **MINI)
    assert main(["sop", "--root", str(root), "--verify"]) == 0
    assert "Exact duplicates (images that decode to the same pixels):" in capsys.readouterr().out
    bad = [mini.splits["train"][1][0], mini.splits["test"][0][0]]
    (root / bad[0]).write_bytes(b"not a jpeg")
    (root / bad[1]).write_bytes((root / bad[1]).read_bytes()[:40])  # truncated
    assert main(["sop", "--root", str(root), "--verify"]) == 1
    err = capsys.readouterr().err
    assert "2 of 8 images could not be decoded" in err
    assert all(path in err for path in bad)


def test_download_resumes_with_a_range_request(server, tmp_path):
    data = bytes(range(256)) * 64
    (server.folder / "big.bin").write_bytes(data)
    server.cut_after = 5000
    dest = tmp_path / "big.bin"
    download(f"{server.url}/big.bin", dest, md5=file_md5(server.folder / "big.bin"))
    assert dest.read_bytes() == data
    assert [r for _, r in server.requests] == [None, "bytes=5000-"]
    assert not dest.with_name("big.bin.part").exists()


def test_download_restarts_when_the_server_ignores_range(server, tmp_path):
    (server.folder / "f.bin").write_bytes(b"the real content")
    server.honour_range = False
    dest = tmp_path / "f.bin"
    dest.with_name("f.bin.part").write_bytes(b"stale")
    download(f"{server.url}/f.bin", dest, md5=None)
    assert dest.read_bytes() == b"the real content"
    assert server.requests[0][1] == "bytes=5-"


def test_download_error_names_the_url(server, tmp_path):
    with pytest.raises(UserError, match=r"Could not download .*/mirror/nothing.zip: HTTP 404"):
        download(f"{server.url}/nothing.zip", tmp_path / "nothing.zip", md5=None)


def _tar_with(path: Path, member: tarfile.TarInfo) -> Path:
    with tarfile.open(path, "w") as tar:
        tar.addfile(member, io.BytesIO(b"x" * member.size))
    return path


def _link(name: str, target: str, kind=tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def _file(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = 1
    return info


@pytest.mark.parametrize(
    "member, shown",
    [
        (_file("../evil"), "../evil"),
        (_file("/tmp/dml_bench_evil"), "/tmp/dml_bench_evil"),
        (_file("a/../../evil"), "a/../../evil"),
        (_link("inside/link", "../../outside"), "inside/link"),
        (_link("abs_link", "/etc/passwd"), "abs_link"),
        (_link("hard", "../outside", tarfile.LNKTYPE), "hard"),
    ],
)
def test_unsafe_tar_members_are_refused(member, shown, tmp_path):
    archive = _tar_with(tmp_path / "bad.tar", member)
    with pytest.raises(UserError, match="CVE-2007-4559") as err:
        safe_extract(archive, tmp_path / "out")
    assert repr(shown) in str(err.value)
    assert "refused by tarfile" not in str(err.value)  # our own checks, the same on every Python
    assert not (tmp_path / "evil").exists() and not Path("/tmp/dml_bench_evil").exists()


def test_unsafe_zip_member_is_refused(tmp_path):
    archive = write_zip(tmp_path / "bad.zip", {"ok.txt": b"ok", "../evil": b"x"})
    with pytest.raises(UserError, match=r"'\.\./evil'"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "evil").exists()


def test_links_inside_the_folder_are_extracted(tmp_path):
    with tarfile.open(tmp_path / "ok.tar", "w") as tar:
        tar.addfile(_file("a/target.txt"), io.BytesIO(b"x"))
        tar.addfile(_link("a/b/link", "../target.txt"))
        tar.addfile(_link("a/hard", "a/target.txt", tarfile.LNKTYPE))
    safe_extract(tmp_path / "ok.tar", tmp_path / "out")
    out = tmp_path / "out" / "a"
    assert (out / "b" / "link").read_bytes() == (out / "hard").read_bytes() == b"x"


def test_cars_annotations_match_the_official_structure(tmp_path):
    mini = MINIATURE_BUILDERS["cars196"](tmp_path)
    rows = mini.splits["train"] + mini.splits["test"]
    plain = loadmat(tmp_path / "cars_annos.mat")["annotations"]
    assert plain.shape == (1, len(rows)) and plain[0, 0]["class"].shape == (1, 1)
    assert plain.dtype.names == (
        "relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test"
    )
    squeezed = loadmat(tmp_path / "cars_annos.mat", squeeze_me=True)["annotations"]
    assert annotation_rows(plain) == annotation_rows(squeezed) == rows
