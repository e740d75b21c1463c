"""Never lose a run: a new run never writes into another run's folder, runs started in the same
second get folders of their own, one process at a time trains a run folder, and files written by
two processes at once are whole. Each test uses real second processes."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml
from omegaconf import OmegaConf

from dml_bench.runtime import run_claim, run_folder
from dml_bench.runtime.errors import UserError
from dml_bench.runtime.files import atomic_write_text, temporary_name
from tests.helpers.config import ROOT
from tests.helpers.payloads import one_paragraph
from tests.helpers.tiny_runs import tiny_csv

ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def finished_run(folder):
    """The files a finished run leaves (what matters here is that they are there, and stay)."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (folder / ".hydra" / "overrides.yaml").write_text("- seed=0\n")
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "best.pt").write_bytes(b"weights")
    (folder / "history.jsonl").write_text('{"epoch": 0}\n')
    (folder / "metrics.json").write_text('{"metrics": {}}\n')
    return {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def train(*args, cwd, env=None):
    return subprocess.run([sys.executable, "-m", "dml_bench.train", *args], cwd=cwd, capture_output=True,
                          text=True, env={**ENV, **(env or {})}, timeout=120)


def test_a_new_run_into_another_runs_folder_is_refused_and_leaves_it_as_it_was(tmp_path):
    run = tmp_path / "run"
    before = finished_run(run)
    result = train("dataset=csv", f"dataset.root={tiny_csv(tmp_path / 'data')}", f"hydra.run.dir={run}", cwd=tmp_path)
    assert result.returncode == 1
    message = one_paragraph(result.stderr)
    assert message == (f"{run} holds the files of another run (checkpoints, history.jsonl, metrics.json), and a new "
                       f"run never writes over them. To continue that run, add resume={run}; to start a new one, "
                       "give another folder (hydra.run.dir=...) or leave hydra.run.dir out for a new timestamped one.")
    after = {path: path.read_bytes() for path in run.rglob("*") if path.is_file() and path.name != run_claim.LOCK_FILE}
    assert after == before  # .hydra/ included: refused before Hydra writes it


def test_the_job_of_a_multirun_refuses_another_runs_folder_too(tmp_path):
    """A multirun's job starts after Hydra wrote its .hydra/: the run itself refuses the folder."""
    run = tmp_path / "sweep" / "0"
    finished_run(run)
    with pytest.raises(UserError, match="holds the files of another run"):
        run_claim.start_in(run, resume=False)
    run_claim.release(run)
    run_claim.start_in(run, resume=True)  # resuming it is what the folder is for
    run_claim.release(run)


def test_processes_claiming_one_folder_at_once_each_get_their_own(tmp_path):
    """Four real processes released together claim the same timestamped name: mkdir lets one have
    it, the others take the next free names."""
    base, go = tmp_path / "outputs" / "2026-12-06" / "10-00-00", tmp_path / "go"
    code = ("import sys, time; from pathlib import Path; from dml_bench.runtime.run_claim import claim_new_folder\n"
            "while not Path(sys.argv[2]).exists(): time.sleep(0.001)\n"
            "print(claim_new_folder(Path(sys.argv[1])).name)")
    claimants = [subprocess.Popen([sys.executable, "-c", code, str(base), str(go)], env=ENV, stdout=subprocess.PIPE,
                                  text=True) for _ in range(4)]
    time.sleep(0.5)  # all four waiting at the line
    go.touch()
    names = sorted(claimant.communicate(timeout=60)[0].strip() for claimant in claimants)
    assert names == ["10-00-00", "10-00-00-1", "10-00-00-2", "10-00-00-3"]


@pytest.mark.slow  # two whole train commands at once: 15 to 35 s
def test_runs_started_in_the_same_second_get_folders_of_their_own(tmp_path):
    # The same start time for both (the resolver's, as torchrun shares it): the same default name.
    env = {"DML_BENCH_START_TIME": "2026-12-06T10:00:00"}
    data = tiny_csv(tmp_path / "data")
    processes = [subprocess.Popen([sys.executable, "-m", "dml_bench.train", "dataset=csv", f"dataset.root={data}",
                                   f"seed={seed}", "trainer.epochs=-1"],  # refused once the folder is claimed
                                  cwd=tmp_path, env={**ENV, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True) for seed in (1, 2)]
    for process in processes:
        process.communicate(timeout=120)
    day = tmp_path / "outputs" / "2026-12-06"
    assert sorted(path.name for path in day.iterdir()) == ["10-00-00", "10-00-00-1"]
    seeds = sorted((day / name / ".hydra" / "overrides.yaml").read_text().count("seed=1") for name in
                   ("10-00-00", "10-00-00-1"))
    assert seeds == [0, 1]  # each folder holds one run's config


def test_a_multirun_started_in_the_same_second_as_another_gets_a_sweep_folder_of_its_own(tmp_path):
    """Another sweep claimed the timestamped folder first (its job 0 finished there): this multirun
    takes TIME-1 and its job runs there (refused once the folder is claimed); the other's files stay."""
    first = tmp_path / "outputs" / "multirun" / "2026-12-06" / "10-00-00"
    before = finished_run(first / "0")
    train("-m", "dataset=csv", f"dataset.root={tiny_csv(tmp_path / 'data')}", "seed=1", "trainer.epochs=-1",
          cwd=tmp_path, env={"DML_BENCH_START_TIME": "2026-12-06T10:00:00"})
    assert {path: path.read_bytes() for path in first.rglob("*") if path.is_file()} == before
    second = first.with_name("10-00-00-1")
    assert (second / "multirun.yaml").is_file()
    job = yaml.safe_load((second / "0" / ".hydra" / "hydra.yaml").read_text())["hydra"]
    assert job["sweep"]["dir"] == "outputs/multirun/2026-12-06/10-00-00-1" and "seed=1" in job["overrides"]["task"]
    assert sorted(path.name for path in first.parent.iterdir()) == ["10-00-00", "10-00-00-1"]


def test_a_sweep_folder_named_by_the_time_is_claimed_and_its_override_replaced(tmp_path, monkeypatch):
    """A ``hydra.sweep.dir`` that names the start time is claimed as the default one is; the
    override that gave it, however written (``++``), gives way to the claimed folder's, and the
    other overrides stay as typed (``${seed}`` is each job's own)."""
    run_folder.register()
    monkeypatch.setenv("DML_BENCH_START_TIME", "2026-12-06T10:00:00")
    (tmp_path / "sweeps" / "10-00-00").mkdir(parents=True)  # another sweep's
    pattern = f"{tmp_path}/sweeps/${{dml_bench.now:%H-%M-%S}}"
    typed = ["hydra.mode=MULTIRUN", "hydra.sweep.subdir=s${seed}", f"++hydra.sweep.dir={pattern}"]
    config = OmegaConf.create({"hydra": {"sweep": {"dir": pattern}, "overrides": {"hydra": typed}}})
    run_claim.RunFolderGuard().on_multirun_start(config)
    claimed = f"{tmp_path}/sweeps/10-00-00-1"
    assert config.hydra.sweep.dir == claimed
    assert OmegaConf.to_container(config.hydra.overrides.hydra, resolve=False) == [
        "hydra.mode=MULTIRUN", "hydra.sweep.subdir=s${seed}", f"hydra.sweep.dir='{claimed}'"]


def hold_in_another_process(run):
    """A real second process that holds ``run``'s lock until it is killed."""
    code = ("import sys, time; from dml_bench.runtime import run_claim; run_claim.hold(sys.argv[1]); "
            "print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(run)], env=ENV, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    return holder


def test_a_second_trainer_of_a_run_folder_is_refused_until_the_first_ends(tmp_path):
    run = tmp_path / "run"
    finished_run(run)
    holder = hold_in_another_process(run)
    try:
        result = train("dataset=csv", f"dataset.root={tiny_csv(tmp_path / 'data')}", f"resume={run}", cwd=tmp_path)
        assert result.returncode == 1
        assert one_paragraph(result.stderr) == (
            f"Another process (pid {holder.pid}) is training in {run}: one process at a time trains a run folder, "
            "else both would write its checkpoints and history. Wait for it to end (or stop it) before resuming; "
            f"evaluating its checkpoints meanwhile is fine (python -m dml_bench.evaluate checkpoint={run}).")
        assert not (run / ".hydra-resume").exists()  # refused before Hydra wrote anything
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    run_claim.start_in(run, resume=True)  # the kernel released the killed holder's lock
    run_claim.release(run)


def test_the_temporaries_of_a_killed_writer_are_removed_when_the_run_starts_again(tmp_path):
    run = tmp_path / "run"
    finished_run(run)
    # A real writer killed midway: its temporary checkpoint stays behind, under its pid.
    code = ("import os, signal, sys; from pathlib import Path; from dml_bench.runtime.files import temporary_name; "
            "temporary_name(Path(sys.argv[1], 'last.pt')).write_bytes(b'half'); os.kill(os.getpid(), signal.SIGKILL)")
    subprocess.run([sys.executable, "-c", code, str(run / "checkpoints")], env=ENV)
    (left,) = (run / "checkpoints").glob(".last.pt.*.tmp")
    alive = temporary_name(run / "metrics.json")  # of a writer that is still running (this one): kept
    alive.write_text("{")
    other_host = run / ".metrics.json.elsewhere_1.0a0b0c0d.tmp"  # of another machine, written just now: kept
    other_host.write_text("{")
    run_claim.start_in(run, resume=True)
    run_claim.release(run)
    assert not left.exists() and alive.exists() and other_host.exists()


def test_two_processes_writing_one_file_never_leave_half_of_it(tmp_path):
    target = tmp_path / "best_eval_metrics.json"
    code = ("import json, sys; from pathlib import Path; from dml_bench.runtime.files import write_json\n"
            "for i in range(40): write_json(Path(sys.argv[1]), {'writer': sys.argv[2], 'values': [i] * 20000})")
    atomic_write_text(target, "{}")
    writers = [subprocess.Popen([sys.executable, "-c", code, str(target), name], env=ENV) for name in ("a", "b")]
    reads = 0
    while any(writer.poll() is None for writer in writers):
        json.loads(target.read_text())  # never half a file
        reads += 1
        time.sleep(0.001)
    assert [writer.returncode for writer in writers] == [0, 0]
    assert json.loads(target.read_text())["writer"] in ("a", "b") and reads > 0
    assert sorted(path.name for path in tmp_path.iterdir()) == ["best_eval_metrics.json"]  # no temporary left


@pytest.mark.slow  # a whole evaluation in a process of its own: 15 to 40 s
def test_evaluating_a_checkpoint_of_a_run_in_training_is_allowed(quickstart_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(quickstart_run, run)
    holder = hold_in_another_process(run)  # as the trainer of a run in progress does
    try:
        result = subprocess.run([sys.executable, "-m", "dml_bench.evaluate", f"checkpoint={run}",
                                 "trainer.progress=false"], cwd=tmp_path, capture_output=True, text=True, env=ENV,
                                timeout=300)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((run / "checkpoints" / "best_eval_metrics.json").read_text())["metrics"]
