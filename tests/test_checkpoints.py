"""Checkpoints on a bad day: a write that fails midway (the disk fills up) leaves the previous
checkpoint loadable and no temporary file; a truncated or corrupt checkpoint is an error that
names the file and what to do, on the real command line too."""

import os
import re
import resource
import shutil

import pytest
import torch

from dml_bench.engine.checkpoint import load_checkpoint, save_checkpoint
from dml_bench.runtime.errors import UserError
from tests.helpers.tiny_runs import assert_reported_once, tiny_csv, tiny_csv_args, tiny_train


def state(epoch: int) -> dict:
    return {"epoch": epoch, "model": {"weight": torch.randn(256, 256, generator=torch.Generator().manual_seed(epoch))}}


def assert_same_state(loaded: dict, expected: dict) -> None:
    assert loaded["epoch"] == expected["epoch"]
    assert torch.equal(loaded["model"]["weight"], expected["model"]["weight"])


def test_a_write_that_fails_midway_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "run" / "checkpoints" / "last.pt"
    save_checkpoint(path, state(1))
    # The file system refuses to write past 64 KiB (the checkpoint is about 256 KiB), as a full disk
    # would: a real failed write() midway, not a mock. Python ignores SIGXFSZ, so write() raises.
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))
    try:
        with pytest.raises(UserError) as raised:
            save_checkpoint(path, state(2))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    message = str(raised.value)
    assert message.startswith(f"Could not write the checkpoint {path} (File too large): it needs 0.3 MiB")
    free = shutil.disk_usage(path.parent).free / 2**20
    shown = float(re.search(r"its file system has ([\d.]+) (MiB|GiB) free", message)[1])
    assert shown == pytest.approx(free / 1024 if "GiB free" in message else free, abs=0.2)
    assert f"The previous last.pt is unchanged and can be resumed from. Free some space, then continue the run " \
           f"with resume={path.parent.parent}." in message
    assert os.listdir(path.parent) == ["last.pt"]  # the temporary file is gone
    assert_same_state(load_checkpoint(path), state(1))


def corrupt(path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes({"empty": b"", "head": data[:100], "half": data[: len(data) // 2],
                      "garbage": bytes(range(256)) * 8}[how])


@pytest.mark.parametrize("how", ["empty", "head", "half", "garbage"])
def test_a_corrupt_last_checkpoint_names_the_file_and_the_best_checkpoint(tmp_path, how):
    last, best = tmp_path / "last.pt", tmp_path / "best.pt"
    save_checkpoint(best, state(3))
    save_checkpoint(last, state(5))
    corrupt(last, how)
    with pytest.raises(UserError, match=rf"^Cannot read the checkpoint {re.escape(str(last))} \(.+\): the file is "
                                        rf"truncated, corrupt or unreadable\. To continue the run from its best "
                                        rf"epoch instead, copy {re.escape(str(best))} \(epoch 3\) over it"):
        load_checkpoint(last)


def test_without_a_readable_best_checkpoint_the_advice_is_to_restart(tmp_path):
    last, best = tmp_path / "last.pt", tmp_path / "best.pt"
    save_checkpoint(last, state(5))
    corrupt(last, "half")
    with pytest.raises(UserError, match=rf"There is no {re.escape(str(best))} to continue from instead: delete"):
        load_checkpoint(last)
    save_checkpoint(best, state(3))
    corrupt(best, "head")
    with pytest.raises(UserError, match=rf"{re.escape(str(best))} cannot be read either: delete "
                                        rf"{re.escape(str(last))}"):
        load_checkpoint(last)


@pytest.mark.slow  # 16 s: the advice, followed end to end; the fast tests below check the message
def test_a_corrupt_last_checkpoint_on_resume_says_what_to_do_and_its_advice_works(tmp_path):
    data = tiny_csv(tmp_path / "data")
    run_dir = tmp_path / "run"
    args = tiny_csv_args(data, run_dir, "trainer.batch_size=8", "trainer.epochs=2")
    tiny_train(*args)
    last, best = run_dir / "checkpoints" / "last.pt", run_dir / "checkpoints" / "best.pt"
    corrupt(last, "half")  # e.g. a copy of the run folder that ran out of space
    (run_dir / "metrics.json").unlink()
    result = tiny_train(*args, f"resume={run_dir}", check=False)
    paragraph = assert_reported_once(result, run_dir, rf"^Cannot read the checkpoint {re.escape(str(last))} \(")
    assert f"copy {best} (epoch " in paragraph and f"delete {last} to start the run again" in paragraph
    shutil.copyfile(best, last)
    tiny_train(*args, f"resume={run_dir}")
    assert (run_dir / "metrics.json").is_file()
