"""What the user gets wrong reaches them as one paragraph on the console, printed once, exit status 1
and the run log's ERROR line, wherever it is found: in the main process or in a DataLoader
worker (the real command line, on tiny csv datasets)."""

import logging

import pytest
from omegaconf import OmegaConf

from dml_bench.builders import build_datasets
from dml_bench.engine.resume import flatten
from dml_bench.runtime.errors import MISSING_VALUE_EXAMPLES
from dml_bench.train import train
from tests.helpers.config import CONFIG_DIR, compose_config
from tests.helpers.payloads import one_paragraph
from tests.helpers.runs import exit_code, hydra_job, run_train
from tests.helpers.tiny_runs import ENV, assert_reported_once, tiny_csv, tiny_csv_args, tiny_train


@pytest.mark.parametrize(("images", "overrides", "expected", "fix"), [
    (12, [], r"has 12 images of 4 classes, and a batch of 128 needs 128 distinct images", "trainer.batch_size=12"),
    pytest.param(16, ["sampler=m_per_class", "trainer.batch_size=32"],
                 r"has 16 images of 4 classes, and a batch of 32 needs 8 classes \(batch_size / sampler\.m",
                 "trainer.batch_size=16", marks=pytest.mark.slow),  # 14 s: test_samplers checks the message
], ids=["uniform", "m_per_class"])
def test_a_training_split_smaller_than_a_batch_names_the_split_and_the_fix(tmp_path, images, overrides, expected, fix):
    data = tiny_csv(tmp_path / "data", train_images=images)
    result = tiny_train(*tiny_csv_args(data, tmp_path / "run", *overrides), check=False)
    paragraph = assert_reported_once(result, tmp_path / "run", expected)
    assert f"dataset.train_split=train ({data / 'splits' / 'train.csv'})" in paragraph
    assert f"Lower it, e.g. {fix}," in paragraph
    if overrides:  # the fix it names works
        tiny_train(*tiny_csv_args(data, tmp_path / "fixed", *overrides, fix))
        assert (tmp_path / "fixed" / "metrics.json").is_file()


@pytest.fixture(scope="module")
def broken_image(tmp_path_factory):
    """A csv dataset whose test split lists a file that is no image (met by the first evaluation)."""
    data = tiny_csv(tmp_path_factory.mktemp("broken_image"))
    (data / "images" / "test_3.png").write_bytes(b"not an image")
    return data


@pytest.mark.slow  # 15 s; the main-process case and the worker traceback test stay fast
def test_an_unreadable_image_met_by_a_worker_is_reported_as_in_the_main_process(broken_image, tmp_path):
    paragraphs = []
    for workers in (0, 2):
        run_dir = tmp_path / f"workers_{workers}"
        result = tiny_train(*tiny_csv_args(broken_image, run_dir, "trainer.batch_size=8",
                                           f"trainer.num_workers={workers}"), check=False)
        paragraphs.append(assert_reported_once(result, run_dir, r"^Cannot read image \S+/test_3\.png \(listed in"))
    assert paragraphs[0] == paragraphs[1]


def test_hydra_full_error_still_shows_the_worker_traceback(broken_image, tmp_path):
    result = run_train(*tiny_csv_args(broken_image, tmp_path, "trainer.batch_size=8", "trainer.num_workers=2"),
                       env={**ENV, "HYDRA_FULL_ERROR": "1"}, check=False)
    assert result.returncode == 1
    assert "Caught UserError in DataLoader worker process" in result.stderr
    assert "Original Traceback" in result.stderr and "PIL.UnidentifiedImageError" in result.stderr


def test_a_missing_mandatory_value_names_the_key_and_an_example(tmp_path, capsys):
    """In this process: the paragraph is under test (the tests above show one on the console)."""
    data = tiny_csv(tmp_path / "data")
    args = [arg for arg in tiny_csv_args(data, tmp_path / "run", "trainer.batch_size=8")
            if not arg.startswith("dataset.root=")]
    with hydra_job(args) as cfg:
        assert exit_code(train, cfg) == 1
    paragraph = one_paragraph(capsys.readouterr().err)
    assert paragraph.startswith("dataset.root must be set")
    assert f"e.g. {MISSING_VALUE_EXAMPLES['dataset.root']}" in paragraph


def test_every_mandatory_value_the_user_gives_has_an_example():
    missing = set()
    for path in CONFIG_DIR.rglob("*.yaml"):
        group = path.parent.relative_to(CONFIG_DIR)
        if group.parts[:1] in (("loss",), ("hydra",)):  # the loss's ??? are filled in by dml_bench.builders
            continue
        package = "" if group == group.parent or "@package _global_" in path.read_text() else f"{group}."
        values = flatten(OmegaConf.to_container(OmegaConf.load(path), resolve=False))
        missing |= {package + key for key, value in values.items() if value == "???"}
    assert {"dataset.root", "checkpoint"} <= missing  # the scan finds them
    assert missing <= set(MISSING_VALUE_EXAMPLES)


def test_splits_that_make_the_numbers_meaningless_are_warned_of(tmp_path, caplog):
    """Training classes in the test split too, or a validation split of one class: the run goes
    on, with one warning line for each."""
    data = tiny_csv(tmp_path / "data", classes=4)
    base = ["dataset=csv", f"dataset.root={data}"]
    with caplog.at_level(logging.WARNING, logger="dml_bench"):
        build_datasets(compose_config(base))
    assert not caplog.records  # tiny_csv's test classes are other classes
    (data / "splits" / "test.csv").write_text("path,label\nimages/test_0.png,2\nimages/test_1.png,7\n")
    with caplog.at_level(logging.WARNING, logger="dml_bench"):
        build_datasets(compose_config(base))
    assert [r.getMessage()[:68] for r in caplog.records] == [
        "1 of the 2 test classes (2) are training classes too: retrieval benc"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dml_bench"):
        build_datasets(compose_config([*base, "protocol=rigorous", "protocol.validation_fraction=0.25"]))
    assert any("the validation split holds out a single class" in r.getMessage() for r in caplog.records)
