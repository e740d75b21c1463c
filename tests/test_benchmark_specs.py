"""One spec per benchmark (dml_bench.data.benchmarks): its name and its alias work wherever a
benchmark is named (prepare_data, the paper experiment's lookup, the Makefile), everything else
reads its facts from the spec, and the Hydra files that must repeat some of them agree with it."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dml_bench.comparison.aggregate import PAPER_RECALL
from dml_bench.config_checks import check_config
from dml_bench.data.benchmarks import BENCHMARKS, SPECS, benchmark, find_benchmark, names_and_aliases
from dml_bench.data.benchmarks import main as benchmarks_main
from dml_bench.data.cache import cache_resize
from dml_bench.data.prepare.vehicleid import TEST_SIZES, split_of_size
from dml_bench.data.splits import missing_dataset_error
from dml_bench.prepare_data import build_parser
from dml_bench.runtime.errors import UserError
from tests.helpers.config import CONFIG_DIR, compose_config

ROOT = Path(__file__).resolve().parents[1]
NOT_BENCHMARKS = {"csv", "glyphs"}  # configs/dataset/ files of folders prepared otherwise


def by_name(spec):
    return spec.name


def test_names_and_aliases_name_one_benchmark_each():
    assert [(spec.name, spec.alias) for spec in SPECS] == [
        ("cub200", "cub"), ("cars196", "cars"), ("sop", "sop"), ("inshop", "inshop"), ("inaturalist", "inat"),
        ("vehicleid", "vehicleid")]
    keys = [key for spec in SPECS for key in dict.fromkeys((spec.name, spec.alias))]
    assert len(keys) == len(set(keys)) and names_and_aliases() == keys
    assert len({spec.experiment for spec in SPECS}) == len(SPECS)
    assert find_benchmark("glyphs") is None and find_benchmark("CUB") is None
    with pytest.raises(UserError, match=r"Unknown dataset 'glyphs': choose one of cub200 \(or cub\), cars196 "
                                        r"\(or cars\), sop, inshop, inaturalist \(or inat\), vehicleid\."):
        benchmark("glyphs")


@pytest.mark.parametrize("spec", SPECS, ids=by_name)
def test_name_and_alias_resolve_for_the_prepare_cli_and_the_paper_experiment(spec, capsys):
    for name in (spec.name, spec.alias):
        assert benchmark(name) is spec
        assert build_parser().parse_args([name, "--root", "unused"]).name == name
        assert benchmarks_main([name, "--field", "experiment"]) == 0
        assert capsys.readouterr().out == f"{spec.experiment}\n"
        assert benchmarks_main([name]) == 0
        assert capsys.readouterr().out == f"{spec.name}\n"


def test_an_unknown_name_is_refused_by_both(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["cub2011", "--root", "unused"])
    assert "invalid choice: 'cub2011'" in capsys.readouterr().err
    assert benchmarks_main(["cub2011", "--field", "experiment"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("error: Unknown dataset 'cub2011': choose one of cub200")


def test_the_table_of_benchmarks(capsys):
    assert benchmarks_main([]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:3] for line in lines] == [[s.name, s.alias, s.experiment] for s in SPECS]
    assert lines[0].endswith("CUB-200-2011 (train 5,864, test 5,924)")


def _make_dry_run(*args: str) -> list[str]:
    """The commands ``make -n ARGS`` would run: nothing is run (-n), and the setup target has no
    stamp to build (STAMP=), so no pip command is even printed."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("MAKE")}
    result = subprocess.run(["make", "-n", "--no-print-directory", *args, f"PY={sys.executable}", "STAMP="],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [line.strip() for line in result.stdout.splitlines() if line.strip()]


# Each make call looks the benchmark up in Python: a canonical name and an alias keep it short;
# every name and alias resolves in the Python-side test above.
@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.parametrize("dataset", ["cub200", "cars"])
def test_make_data_and_make_paper_take_the_same_names(dataset):
    spec = benchmark(dataset)
    assert _make_dry_run("data", f"DATASET={dataset}") == [
        f"{sys.executable} -m dml_bench.prepare_data {spec.name} --root data/{spec.name}"]
    assert _make_dry_run("paper", f"DATASET={dataset}", "ARGS=seed=1") == [
        f"{sys.executable} -m dml_bench.train experiment={spec.experiment} seed=1"]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_data_passes_the_source_and_refuses_an_unknown_dataset():
    assert _make_dry_run("data", "DATASET=sop", "SOURCE=/mirror") == [
        f"{sys.executable} -m dml_bench.prepare_data sop --root data/sop --source /mirror"]
    env = {key: value for key, value in os.environ.items() if not key.startswith("MAKE")}
    result = subprocess.run(["make", "-n", "paper", "DATASET=cub2011", f"PY={sys.executable}", "STAMP="],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "dml_bench" not in result.stdout
    assert "Unknown dataset 'cub2011'" in result.stderr and "DATASET=cub2011 is not a benchmark" in result.stderr


def test_every_benchmark_has_its_hydra_files_and_every_hydra_file_its_spec():
    assert {p.stem for p in (CONFIG_DIR / "dataset").glob("*.yaml")} - NOT_BENCHMARKS == set(BENCHMARKS)
    assert all((CONFIG_DIR / "experiment" / f"{spec.experiment}.yaml").is_file() for spec in SPECS)
    # the paper's own numbers: the benchmarks it ran, each with its paper_* experiment
    experiments = {p.stem for p in (CONFIG_DIR / "experiment").glob("paper_*.yaml")}
    assert experiments == {spec.experiment for spec in SPECS if spec.paper_recall} == set(PAPER_RECALL)
    assert {spec.name for spec in SPECS if not spec.paper_recall} == {"inaturalist", "vehicleid"}


def _resize(value):
    return value if value is None or isinstance(value, int) else tuple(value)


# The dataset options that choose which splits are evaluated: VehicleID's test sets.
SPLIT_OPTIONS = {"vehicleid": [f"dataset.test_size={size}" for size in TEST_SIZES]}


@pytest.mark.parametrize("spec", SPECS, ids=by_name)
def test_the_dataset_config_states_what_the_spec_says(spec):
    used = set()
    for option in SPLIT_OPTIONS.get(spec.name, [None]):
        data = compose_config([f"dataset={spec.name}", *([option] if option else [])]).dataset
        assert data.name == spec.name and data.root.endswith(f"/{spec.name}") and data.prepare is None
        evaluated = [data.query_split] + ([data.gallery_split] if data.gallery_split else [])
        used |= {data.train_split, *evaluated}
        for transform in (data.train_transform, data.test_transform):
            assert _resize(transform.resize) == spec.recipe_resize
    assert used == set(spec.splits)


def test_vehicleid_evaluates_the_test_set_its_size_names_and_refuses_another():
    assert compose_config(["dataset=vehicleid"]).dataset.query_split == "test_large"
    for size in TEST_SIZES:
        data = compose_config(["experiment=ce_vehicleid", f"dataset.test_size={size}"]).dataset
        assert (data.query_split, data.gallery_split) == (split_of_size(size), None)
    with pytest.raises(UserError, match=r"dataset.test_size=huge must be one of small, medium, large"):
        check_config(compose_config(["dataset=vehicleid", "dataset.test_size=huge"]))


@pytest.mark.parametrize("spec", SPECS, ids=by_name)
def test_the_experiment_runs_its_benchmark_at_the_published_ks(spec):
    cfg = compose_config([f"experiment={spec.experiment}"])
    assert cfg.dataset.name == spec.name
    assert list(cfg.evaluation.recall_ks) == list(spec.recall_ks)
    assert PAPER_RECALL.get(spec.experiment, {}) == dict(spec.paper_recall)
    assert not spec.paper_recall or list(spec.paper_recall) == list(spec.recall_ks)


@pytest.mark.parametrize("spec", SPECS, ids=by_name)
def test_the_cache_and_the_missing_dataset_error_read_the_spec(spec, tmp_path):
    if spec.recipe_resize is None:
        with pytest.raises(UserError, match="recipe has no Resize"):
            cache_resize(spec.name, "recipe")
    else:
        assert cache_resize(spec.name, "recipe") == spec.recipe_resize
    message = str(missing_dataset_error(spec.name, tmp_path, "train"))
    assert f"prepare_data {spec.name} --root {tmp_path}" in message and f"make data DATASET={spec.name}" in message
    own = str(missing_dataset_error("my_photos", tmp_path, "train"))
    assert "prepare_data" not in own and "header `path,label`" in own
