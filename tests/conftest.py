"""Shared fixtures: the real config tree composed in one place, and small real training runs."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from dml_bench import run_folder

ROOT = Path(__file__).resolve().parents[1]
run_folder.register()  # the entry points register these before composing configs/train.yaml; so do the tests
CONFIG_DIR = ROOT / "configs"

# A smaller rendering of the embedded glyph data (one rendering per font) and one short epoch:
# every test that trains uses these, so the suite stays fast on two CPU cores.
FAST_OVERRIDES = [
    "dataset.root=data/glyphs-tests",
    "dataset.prepare.renderings_per_font=1",
    "dataset.prepare.min_per_class=5",
    "trainer.epochs=1",
    "trainer.batch_size=64",
    "trainer.num_workers=0",
    "trainer.progress=false",
    "trainer.log_every_steps=2",
]


# A prepared benchmark (miniature data, tests/miniature_datasets.py) trained briefly on CPU:
# 32 px crops of images resized to 36, batches of 4, one epoch.
MINIATURE_RUN_OVERRIDES = [
    "dataset.train_transform.crop_size=32", "dataset.train_transform.resize=36",
    "dataset.test_transform.crop_size=32", "dataset.test_transform.resize=36",
    "trainer.batch_size=4", "trainer.epochs=1", "trainer.device=cpu", "trainer.num_workers=0",
    "trainer.progress=false", "trainer.log_every_steps=1",
]

# One intra-op thread for tiny models on tiny images: more threads gain nothing there and, on a
# shared CPU, spin-wait for each other (a ResNet-50 step on 32 px images: 0.4 s instead of 9 s).
ONE_THREAD_ENV = {"OMP_NUM_THREADS": "1"}


@pytest.fixture
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def compose_config(overrides=()):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=False)


def run_train(*args: str, env=None, check=True, timeout=600) -> subprocess.CompletedProcess:
    """``python -m dml_bench.train ARGS`` in a subprocess, from the project root."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    result = subprocess.run([sys.executable, "-m", "dml_bench.train", *args], cwd=ROOT, env=full_env,
                            capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(
            f"training failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        )
    return result


def selected_epoch(history: list[dict], monitor: str) -> int:
    """The epoch a run must report, from its history.jsonl: the best on ``monitor`` among all its
    evaluations, epoch 0 included; of tied ones, the latest (docs/paper.md)."""
    return max(reversed(history), key=lambda record: record["metrics"][monitor])["epoch"]


@pytest.fixture(scope="session")
def quickstart_run(tmp_path_factory) -> Path:
    """One real one-epoch quickstart run on CPU; returns its run folder."""
    run_dir = tmp_path_factory.mktemp("quickstart_run")
    run_train("experiment=quickstart", *FAST_OVERRIDES, "trainer.device=cpu", f"hydra.run.dir={run_dir}")
    return run_dir
