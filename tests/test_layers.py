"""The package's layers (pyproject.toml's import-linter contract) hold, and a back-arrow breaks them."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(tree: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo", str(tree / "pyproject.toml")], cwd=tree,
                          env={"PYTHONPATH": str(tree), "PATH": ""}, capture_output=True, text=True)


def copy_of_package(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "dml_bench", tmp_path / "dml_bench", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_layers_hold():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_an_import_up_the_layers_breaks_the_build(tmp_path):
    tree = copy_of_package(tmp_path)
    files = tree / "dml_bench" / "runtime" / "files.py"  # the lowest layer reaching up to the builders
    files.write_text(files.read_text() + "\nfrom dml_bench import builders  # noqa: E402,F401\n")
    result = lint_imports(tree)
    assert result.returncode == 1
    assert "BROKEN" in result.stdout and "dml_bench.runtime.files -> dml_bench.builders" in result.stdout


def test_two_independent_modules_of_a_layer_may_not_import_each_other(tmp_path):
    tree = copy_of_package(tmp_path)
    losses = tree / "dml_bench" / "losses" / "base.py"
    losses.write_text(losses.read_text() + "\nimport dml_bench.models.embedder  # noqa: E402,F401\n")
    result = lint_imports(tree)
    assert result.returncode == 1
    assert "dml_bench.losses.base -> dml_bench.models.embedder" in result.stdout
