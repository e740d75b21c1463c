"""The smallest real training runs, for the reliability tests (resume, determinism, failures, DDP).

``tiny_glyphs(folder)`` writes split files that list a subset of the session's glyphs (6 images of each
training class, 4 of each test class; the images themselves are linked, not copied), and
``tiny_args`` trains a two-block CNN on 16-pixel crops of them for 3 epochs of 10 steps.
``tiny_csv(folder, ...)`` writes a ``dataset=csv`` folder of a few tiny PNGs, and ``tiny_csv_args``
trains on it for one epoch, for tests of what the user gets wrong.
"""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.helpers import session
from tests.helpers.config import ROOT
from tests.helpers.runs import ONE_THREAD_ENV, run_train

# Runs compared for equality must also use the same number of threads.
ENV = ONE_THREAD_ENV

TINY_OVERRIDES = [
    "experiment=quickstart",
    "trainer.epochs=3",
    "trainer.batch_size=64",
    "trainer.num_workers=0",
    "trainer.progress=false",
    "trainer.log_every_steps=2",
    "trainer.device=cpu",
    "scheduler.warmup_iters=5",
    "model.backbone.widths=[8,16]",
    "model.embedding_size=32",
    "dataset.train_transform.crop_size=16",
    "dataset.test_transform.crop_size=16",
]


def tiny_glyphs(folder: Path) -> Path:
    """The session's subset of the glyphs (``session.glyphs_subset``), written into ``folder``."""
    return session.glyphs_subset(folder)


def tiny_args(data: Path, *extra: str) -> list[str]:
    return [*TINY_OVERRIDES, f"dataset.root={data}", *extra]


CSV_OVERRIDES = [
    "dataset=csv",
    "trainer.epochs=1",
    "trainer.num_workers=0",
    "trainer.progress=false",
    "trainer.device=cpu",
    "model.backbone.widths=[8,16]",
    "model.embedding_size=8",
    "dataset.train_transform.crop_size=16",
    "dataset.train_transform.resize=18",
    "dataset.test_transform.crop_size=16",
    "dataset.test_transform.resize=18",
]


def tiny_csv(folder: Path, train_images: int = 16, classes: int = 4, test_images: int = 8) -> Path:
    """A ``dataset=csv`` folder: ``train_images`` 20-pixel PNGs of ``classes`` classes in
    splits/train.csv, ``test_images`` of as many other classes in splits/test.csv."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "splits").mkdir(exist_ok=True)
    for split, count, first_class in (("train", train_images, 0), ("test", test_images, classes)):
        rows = []
        for i in range(count):
            path = f"images/{split}_{i}.png"
            Image.new("RGB", (20, 20), (i * 37 % 256, i * 91 % 256, 50 * (i % classes))).save(folder / path)
            rows.append({"path": path, "label": first_class + i % classes})
        with open(folder / "splits" / f"{split}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["path", "label"])
            writer.writeheader()
            writer.writerows(rows)
    return folder


def tiny_csv_args(data: Path, run_dir: Path, *extra: str) -> list[str]:
    return [*CSV_OVERRIDES, f"dataset.root={data}", f"hydra.run.dir={run_dir}", *extra]


def tiny_train(*args: str, check=True) -> subprocess.CompletedProcess:
    return run_train(*args, env=ENV, check=check)


def assert_reported_once(result, run_dir, pattern: str) -> str:
    """The error paragraph (matching ``pattern``), checked to be shown as the user must see it."""
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-3000:]
    console = result.stdout + result.stderr
    assert "Traceback" not in console, console[-3000:]
    paragraph = result.stderr.rsplit("\nError: ", 1)[-1].rstrip("\n")
    assert re.search(pattern, paragraph), result.stderr
    assert "\n" not in paragraph and console.count(paragraph) == 1, console[-3000:]
    log_errors = [line for line in (run_dir / "train.log").read_text().splitlines() if "[ERROR]" in line]
    assert len(log_errors) == 1 and log_errors[0].endswith(f"[ERROR] - {paragraph}"), log_errors
    return paragraph


TORCHRUN = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m")


def torchrun_train(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node=2 -m dml_bench.train ARGS``: two CPU ranks under gloo."""
    result = subprocess.run([*TORCHRUN, "dml_bench.train", *args], check=False, cwd=cwd, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT), **ENV}, timeout=600)
    assert result.returncode == 0, f"torchrun failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


def start_train(*args: str, launcher=(sys.executable, "-m"), cwd=None, **popen) -> subprocess.Popen:
    """``python -m dml_bench.train ARGS`` (or ``torchrun ... -m``) in the background, from ``cwd``
    (the session folder by default): its stderr piped and its stdout dropped, unless ``popen``
    (more options of ``subprocess.Popen``) says otherwise."""
    return subprocess.Popen([*launcher, "dml_bench.train", *args], cwd=cwd or session.folder(),
                            env={**os.environ, "PYTHONPATH": str(ROOT), **ENV}, text=True,
                            **{"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE, **popen})


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (torchrun starts its ranks in sessions of their own)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    kids = children.read_text().split() if children.exists() else []
    return [pid, *(p for kid in kids for p in process_tree(int(kid)))]


def kill_when(process: subprocess.Popen, condition, timeout: float = 300) -> None:
    """SIGKILL the run and every process it started as soon as ``condition()`` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"the run ended before it could be killed:\n{process.stderr.read()[-3000:]}")
        assert time.monotonic() < deadline, "timed out waiting to kill the run"
        time.sleep(0.02)
    for pid in process_tree(process.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()
    process.stderr.close()


def read_results(run_dir: Path) -> tuple[dict, list[dict]]:
    """metrics.json's metrics and best epoch, and history.jsonl without its timings."""
    summary = json.loads((run_dir / "metrics.json").read_text())
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    for record in history:
        record.pop("elapsed_s")
    return {key: summary[key] for key in ("metrics", "best_epoch", "initial_metrics", "final_metrics")}, history


def tb_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every TensorBoard scalar of the run as TensorBoard shows it (purged events left out)."""
    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
