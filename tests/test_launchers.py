"""Clusters through dml_bench's submitit launchers: configs/hydra/launcher/slurm.yaml asks SLURM for
one task per GPU, and a two-job multirun goes through submitit's local executor
(hydra/launcher=slurm_local, the code path SLURM jobs take, run on this machine): a failing job
fails as a submitit job while the other goes on, and a job interrupted the way SLURM interrupts a
preempted one is requeued and continues from its last checkpoint."""

import os
import signal
import time
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from submitit.local.local import LocalJob

from dml_bench.comparison.aggregate import collect
from dml_bench.comparison.runs import read_runs
from dml_bench.runtime.submitit_jobs import requeued_overrides
from dml_bench.train import train
from tests.helpers.config import CONFIG_DIR
from tests.helpers.runs import hydra_job
from tests.helpers.tiny_runs import process_tree, read_results, start_train, tiny_args, tiny_glyphs

# Two epochs of 10 steps, a checkpoint every 3 steps: the job is interrupted in the middle of an epoch.
RUN = ("trainer.epochs=2", "trainer.checkpoint_every_steps=3")


def test_slurm_launcher_runs_one_ddp_task_per_gpu_and_requeues_timed_out_jobs():
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["hydra/launcher=slurm", "trainer=ddp",
                                                      "hydra.launcher.gpus_per_node=8", "hydra.launcher.partition=gpu"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.dml_bench_launchers.SlurmLauncher"
    assert (launcher.partition, launcher.gpus_per_node, launcher.tasks_per_node) == ("gpu", 8, 8)
    assert launcher.max_num_timeout == 3
    assert cfg.trainer.distributed is True


@pytest.fixture
def hydra_config():
    """The process's HydraConfig, put back after the test."""
    saved = HydraConfig.instance().cfg
    yield HydraConfig.instance()
    HydraConfig.instance().cfg = saved


def test_a_job_interrupted_before_its_first_checkpoint_is_requeued_as_it_was(tmp_path, hydra_config):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", return_hydra_config=True)
    cfg.hydra.runtime.output_dir = str(tmp_path)
    hydra_config.set_config(cfg)
    assert requeued_overrides(["seed=1"]) == ["seed=1"]  # no checkpoint yet: the job starts afresh
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").touch()
    assert requeued_overrides(["seed=1", f"resume={tmp_path}"]) == ["seed=1", f"resume={tmp_path}"]


def job_process(root: int, log_file: Path) -> int | None:
    """The process, among ``root`` and its descendants, that has ``log_file`` open: the submitit
    task running that job."""
    for pid in process_tree(root):
        try:
            if any(os.readlink(fd) == str(log_file) for fd in Path(f"/proc/{pid}/fd").iterdir()):
                return pid
        except OSError:  # the process ended meanwhile
            continue
    return None


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tiny_glyphs(tmp_path_factory.mktemp("tiny_glyphs"))


@pytest.fixture(scope="module")
def sweep(data, tmp_path_factory) -> Path:
    """The multirun: job 0 fails (trainer.amp=fp8); job 1, once it wrote its first mid-epoch
    checkpoint, gets what SLURM sends a preempted job (SIGTERM, then submitit's SIGUSR2)."""
    sweep = tmp_path_factory.mktemp("sweep")
    launch = start_train("-m", "hydra/launcher=slurm_local",
                         *tiny_args(data, *RUN, "trainer.amp=fp8,none", f"hydra.sweep.dir={sweep}"))
    deadline = time.monotonic() + 600
    while not (sweep / "1" / "checkpoints" / "last.pt").exists():
        assert launch.poll() is None, f"the multirun ended before the interruption:\n{launch.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, "timed out waiting for the checkpoint"
        time.sleep(0.02)
    task = job_process(launch.pid, (sweep / "1" / "train.log").resolve())
    assert task is not None
    for sent in (signal.SIGTERM, signal.SIGUSR2):
        os.kill(task, sent)
    _, stderr = launch.communicate(timeout=600)
    assert launch.returncode == 0, stderr[-5000:]
    return sweep


def test_a_failed_run_fails_its_job_and_the_other_jobs_go_on(sweep):
    folder = sweep / ".submitit" / "%j"
    jobs = [LocalJob(folder, path.name) for path in (sweep / ".submitit").iterdir() if path.name != "%j"]
    errors = [job.exception() for job in jobs]  # from each job's result file, as submitit reads it
    assert len(errors) == 2 and errors.count(None) == 1
    [error] = [e for e in errors if e is not None]
    assert "UserError: trainer.amp=fp8 is not one of auto, bf16, fp16, none." in str(error)
    [failed] = [job for job, e in zip(jobs, errors) if e is not None]
    assert "Job completed successfully" not in failed.stdout()
    assert (sweep / "1" / "metrics.json").is_file() and not (sweep / "0" / "metrics.json").exists()
    _, headers, rows = collect(read_runs([sweep]), per_run=True)
    status = {row[headers.index("trainer.amp")]: row[headers.index("status")] for row in rows}
    assert status == {"fp8": "failed: trainer.amp=fp8 is not one of auto, bf16, fp16, none.", "none": "completed"}


def test_an_interrupted_job_is_requeued_and_ends_as_the_uninterrupted_run(sweep, data, tmp_path):
    run_dir = sweep / "1"
    with hydra_job(tiny_args(data, *RUN, "trainer.amp=none"), output_dir=tmp_path) as cfg:
        train(cfg)  # the uninterrupted run, in this process (the sweep ran the command lines)
    assert read_results(run_dir) == read_results(tmp_path)
    log = (run_dir / "train.log").read_text()
    assert log.count("resumed from") == 1 and log.count("epoch 0: recall@1") == 1
    assert f"resume={run_dir}" in yaml.safe_load((run_dir / ".hydra-resume" / "overrides.yaml").read_text())
    assert not any(o.startswith("resume=") for o in yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text()))
