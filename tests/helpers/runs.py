"""Real training runs: in a subprocess where the command line itself is under test (``run_train``),
in this process otherwise (``hydra_job`` + ``exit_code``), and the overrides that keep them short."""

import copy
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import open_dict, read_write

from dml_bench.runtime.entry import report_user_errors
from tests.helpers import session
from tests.helpers.config import CONFIG_DIR, ROOT

# One intra-op thread for tiny models on tiny images: more threads gain nothing there and, on a
# shared CPU, spin-wait for each other (a ResNet-50 step on 32 px images: 0.4 s instead of 9 s).
ONE_THREAD_ENV = {"OMP_NUM_THREADS": "1"}

# One short epoch on the session's glyph data, on CPU.
FAST_SETTINGS = [
    *session.GLYPHS_PREPARE,
    "trainer.epochs=1",
    "trainer.batch_size=64",
    "trainer.num_workers=0",
    "trainer.progress=false",
    "trainer.log_every_steps=2",
    "trainer.device=cpu",
]


# The session's sweep (conftest's ``loss_sweep``): two losses, each run also logging to CSV.
LOSS_SWEEP = ("experiment=quickstart", "loss=cross_entropy,contrastive", "logger=[tensorboard,csv]")


def fast_overrides() -> list[str]:
    """The overrides every quickstart-sized test run uses: the session's subset of the shared glyph
    data (``session.quickstart_root``), one short epoch."""
    return [f"dataset.root={session.quickstart_root()}", *FAST_SETTINGS]


# A prepared benchmark (miniature data, tests/helpers/miniature_datasets.py) trained briefly on
# CPU: 32 px crops of images resized to 36, batches of 4, one epoch.
MINIATURE_RUN_OVERRIDES = [
    "dataset.train_transform.crop_size=32", "dataset.train_transform.resize=36",
    "dataset.test_transform.crop_size=32", "dataset.test_transform.resize=36",
    "trainer.batch_size=4", "trainer.epochs=1", "trainer.device=cpu", "trainer.num_workers=0",
    "trainer.progress=false", "trainer.log_every_steps=1",
]


def run_module(module: str, *args: str, env=None, check=True, timeout=600) -> subprocess.CompletedProcess:
    """``python -m MODULE ARGS`` in a subprocess with one intra-op thread, from the session folder
    (paths a test leaves relative land there, not in the checkout)."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **ONE_THREAD_ENV, **(env or {})}
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=session.folder(), env=full_env,
                            capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{module} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        )
    return result


def run_train(*args: str, env=None, check=True, timeout=600) -> subprocess.CompletedProcess:
    """``python -m dml_bench.train ARGS`` in a subprocess (see ``run_module``)."""
    return run_module("dml_bench.train", *args, env=env, check=check, timeout=timeout)


@contextmanager
def hydra_job(overrides, *, output_dir=None, config_name: str = "train"):
    """The task config of ``python -m dml_bench.<config_name> OVERRIDES``, for running the entry
    point's function in this process: composed with Hydra's own node, and ``HydraConfig`` set as
    Hydra sets it for a single run (run mode; the output folder ``output_dir``, else hydra.run.dir
    as the config resolves it, e.g. the ``resume`` folder; a relative one under the session
    folder, as ``run_module`` runs from there), cleared on exit. Hydra's job logging
    and its .hydra/ files are not written: tests that read them run a subprocess."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3", job_name=config_name):
        cfg = compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.mode = RunMode.RUN
        cfg.hydra.runtime.output_dir = str(session.folder() / (output_dir or cfg.hydra.run.dir))  # relative: there
    Path(cfg.hydra.runtime.output_dir).mkdir(parents=True, exist_ok=True)
    task = copy.deepcopy(cfg)
    with read_write(task), open_dict(task):
        del task["hydra"]
    HydraConfig.instance().set_config(cfg)
    try:
        yield task
    finally:
        HydraConfig.instance().cfg = None


def exit_code(function, cfg) -> int:
    """The status the entry point's process would exit with: ``function(cfg)`` run through
    ``report_user_errors`` as ``main`` runs it (a UserError: its paragraph on stderr, exit 1)."""
    try:
        report_user_errors(function, cfg)
    except SystemExit as error:
        return error.code
    return 0


def selected_epoch(history: list[dict], monitor: str) -> int:
    """The epoch a run must report, from its history.jsonl: the best on ``monitor`` among all its
    evaluations, epoch 0 included; of tied ones, the latest (docs/paper.md)."""
    return max(reversed(history), key=lambda record: record["metrics"][monitor])["epoch"]


def tensorboard_dir(run_dir: Path) -> Path:
    """The folder of a run's TensorBoard events: ``tb/`` of a single run, ``tb/<what the sweep
    varies>/`` of a multirun's job."""
    (events, *_) = sorted(Path(run_dir).glob("tb/**/events.out.tfevents.*"))
    return events.parent
