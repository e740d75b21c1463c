"""Reproducible runs and crash-safe resume: a run killed with SIGKILL at any point, or interrupted
with Ctrl-C or SIGTERM, and resumed with ``resume=RUN_DIR`` ends exactly as the uninterrupted run
(tiny real runs on CPU, compared for equality: metrics.json, history.jsonl and every TensorBoard
scalar)."""

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time

import pytest
import torch
from omegaconf import OmegaConf

from dml_bench.engine.resume import resume_checkpoint
from dml_bench.runtime.errors import UserError
from dml_bench.train import train
from tests.helpers.runs import exit_code, hydra_job
from tests.helpers.tiny_runs import (
    kill_when,
    read_results,
    start_train,
    tb_scalars,
    tiny_args,
    tiny_glyphs,
    tiny_train,
)

BATCH = 64  # tiny_runs.TINY_OVERRIDES' trainer.batch_size


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tiny_glyphs(tmp_path_factory.mktemp("tiny_glyphs"))


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """An uninterrupted 3-epoch run."""
    run_dir = tmp_path_factory.mktemp("reference")
    tiny_train(*tiny_args(data, f"hydra.run.dir={run_dir}"))
    return run_dir


def history_epochs(run_dir) -> list[int]:
    path = run_dir / "history.jsonl"
    return [json.loads(line)["epoch"] for line in path.read_text().splitlines()] if path.exists() else []


def checkpoint(run_dir) -> dict | None:
    path = run_dir / "checkpoints" / "last.pt"
    return torch.load(path, weights_only=False) if path.exists() else None


def assert_same_run(run_dir, reference) -> None:
    assert read_results(run_dir) == read_results(reference)
    assert history_epochs(run_dir) == [0, 1, 2, 3]
    assert tb_scalars(run_dir) == tb_scalars(reference)


# 10 to 15 s; in the default suite, every resume test compares a second run of the same seed with
# the reference: its epochs before the kill, and the checkpoint the resumed run continues from.
@pytest.mark.slow
def test_two_runs_with_the_same_seed_are_identical(data, reference, tmp_path):
    tiny_train(*tiny_args(data, f"hydra.run.dir={tmp_path}"))
    assert read_results(tmp_path) == read_results(reference)
    assert json.loads((tmp_path / "run_info.json").read_text())["deterministic"] is True


# 20 to 27 s; in the default suite, a SIGKILL in the middle of an epoch (next test) and a SIGTERM
# after an epoch's checkpoint, resumed with DataLoader workers (test_an_interrupted_run_...).
@pytest.mark.slow
def test_resume_after_sigkill_ends_as_the_uninterrupted_run(data, reference, tmp_path):
    run_dir = tmp_path / "run"
    kill_when(start_train(*tiny_args(data, f"hydra.run.dir={run_dir}")),
              lambda: (run_dir / "checkpoints" / "last.pt").exists())
    assert not (run_dir / "metrics.json").exists()
    # Resumed with DataLoader workers: augmentations come from per-sample seeds, not from workers.
    result = tiny_train(*tiny_args(data, "trainer.num_workers=2", f"resume={run_dir}"))
    assert f"run folder: {run_dir}" in result.stdout
    assert_same_run(run_dir, reference)
    # The run's own .hydra/ is kept; the resuming command's config goes beside it.
    assert "resume=" not in (run_dir / ".hydra" / "overrides.yaml").read_text()
    assert f"resume={run_dir}" in (run_dir / ".hydra-resume" / "overrides.yaml").read_text()
    assert "resumed from" in (run_dir / "train.log").read_text()


def test_resume_from_a_mid_epoch_checkpoint(data, reference, tmp_path):
    run_dir = tmp_path / "run"
    args = tiny_args(data, "trainer.checkpoint_every_steps=2")

    def mid_epoch_checkpoint():
        state = checkpoint(run_dir)
        return state is not None and state["epoch"] >= 1 and state["epoch_progress"]["batches"] > 0

    kill_when(start_train(*args, f"hydra.run.dir={run_dir}"), mid_epoch_checkpoint)
    state = checkpoint(run_dir)
    steps_per_epoch = (len((data / "splits" / "train.csv").read_text().splitlines()) - 1) // BATCH  # drop_last
    assert 0 < state["epoch_progress"]["batches"] < steps_per_epoch
    assert state["global_step"] == steps_per_epoch * state["epoch"] + state["epoch_progress"]["batches"]
    result = tiny_train(*args, f"resume={run_dir}")
    assert f"run folder: {run_dir}" in result.stdout
    assert_same_run(run_dir, reference)
    assert json.loads((run_dir / "run_info.json").read_text())["deterministic"] is True
    # The run's own .hydra/ is kept; the resuming command's config goes beside it.
    assert "resume=" not in (run_dir / ".hydra" / "overrides.yaml").read_text()
    assert f"resume={run_dir}" in (run_dir / ".hydra-resume" / "overrides.yaml").read_text()
    assert "resumed from" in (run_dir / "train.log").read_text()


@pytest.mark.slow  # 16 s; resuming after a checkpoint is in the default suite
def test_resume_of_a_run_killed_before_its_first_checkpoint_starts_it_afresh(data, reference, tmp_path):
    run_dir = tmp_path / "run"
    kill_when(start_train(*tiny_args(data, f"hydra.run.dir={run_dir}")), lambda: history_epochs(run_dir) == [0])
    assert checkpoint(run_dir) is None, "killed too late: the first checkpoint was already written"
    tiny_train(*tiny_args(data, f"resume={run_dir}"))
    assert_same_run(run_dir, reference)
    said = [line for line in (run_dir / "train.log").read_text().splitlines() if "no checkpoint" in line]
    assert said == [said[0]] and said[0].endswith(
        f"[INFO] - resume={run_dir}: no checkpoint to continue from ({run_dir / 'checkpoints' / 'last.pt'} does "
        "not exist yet); the run starts again from scratch in its folder"), said


# SIGTERM (what schedulers send) in the default suite; Ctrl-C's SIGINT takes the same path: slow.
@pytest.mark.parametrize("sent", [pytest.param(signal.SIGINT, marks=pytest.mark.slow), signal.SIGTERM],
                         ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_run_says_where_it_stopped_and_its_command_continues_it(data, reference, tmp_path, sent):
    run_dir = tmp_path / "run"
    run = start_train(*tiny_args(data, "trainer.num_workers=2", f"hydra.run.dir={run_dir}"), stdout=subprocess.PIPE,
                      process_group=0)
    while not (run_dir / "checkpoints" / "last.pt").exists():  # epoch 1 is done: epoch 2 (10 steps) begins
        assert run.poll() is None, run.stderr.read()[-3000:]
        time.sleep(0.01)
    time.sleep(0.2)  # past the fsync of the checkpoints folder that follows the rename of last.pt
    os.killpg(run.pid, sent)  # as Ctrl-C or a scheduler sends it: to the DataLoader workers too
    stdout, stderr = run.communicate(timeout=300)
    assert run.returncode == -sent, stderr[-3000:]  # ended by the signal: a shell's $? is 130 or 143
    console = stdout + stderr
    assert "Traceback" not in console, console[-3000:]
    # epoch 2 is 8 tiny steps: on an idle machine the signal may land in its evaluation already
    said = re.compile(rf"\[WARNING\] - interrupted \({sent.name}\) during (the evaluation of )?epoch 2; "
                      "continue it with: ")
    [shown] = [line for line in console.splitlines() if "interrupted" in line]
    [logged] = [line for line in (run_dir / "train.log").read_text().splitlines() if "interrupted" in line]
    assert shown == logged and said.search(logged), logged
    command = shlex.split(logged[said.search(logged).end():])
    assert command[:3] == ["python", "-m", "dml_bench.train"] and command[-1] == f"resume={run_dir}"
    tiny_train(*command[3:])
    assert_same_run(run_dir, reference)


def train_in_process(*args: str, capsys) -> tuple[int, str]:
    """The exit status and stderr of ``python -m dml_bench.train ARGS``, run in this process (for
    runs that stop before training: the resume checks come first)."""
    with hydra_job(args) as cfg:
        code = exit_code(train, cfg)
    return code, capsys.readouterr().err


def test_resume_with_another_config_names_the_keys_and_the_run_command(data, reference, capsys):
    lr = OmegaConf.load(reference / ".hydra" / "config.yaml").optimizer.lr
    code, stderr = train_in_process(*tiny_args(data, f"optimizer.lr={lr * 2}", f"resume={reference}"), capsys=capsys)
    assert code == 1 and "Traceback" not in stderr
    assert (f"resume={reference} continues that run with the config it was started with, but this command changes "
            f"a setting: optimizer.lr is {lr!r} in the run and {lr * 2!r} here. Give the run's own overrides again: "
            "python -m dml_bench.train experiment=quickstart") in stderr
    assert OmegaConf.load(reference / ".hydra" / "config.yaml").optimizer.lr == lr  # left as it was


def test_resume_of_a_folder_that_is_no_run_says_so(data, tmp_path, capsys):
    code, stderr = train_in_process(*tiny_args(data, f"resume={tmp_path}"), capsys=capsys)
    assert code == 1 and "Traceback" not in stderr
    assert f"resume={tmp_path} is not a run folder" in stderr


def test_a_run_saved_before_a_newer_setting_resumes_unless_the_command_sets_it(reference, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    stored = OmegaConf.load(run / ".hydra" / "config.yaml")
    del stored.evaluation["exclude"]  # as a run of an earlier dml_bench saved it
    OmegaConf.save(stored, run / ".hydra" / "config.yaml")
    current = OmegaConf.to_container(OmegaConf.merge(stored, {"resume": str(run), "evaluation": {"exclude": "index"}}))
    assert resume_checkpoint(str(run), run, current) == run / "checkpoints" / "last.pt"
    changed = current | {"evaluation": {**current["evaluation"], "exclude": "first_neighbor"}}
    with pytest.raises(UserError, match="evaluation.exclude is unset in the run and 'first_neighbor' here"):
        resume_checkpoint(str(run), run, changed, ["evaluation.exclude=first_neighbor"])
