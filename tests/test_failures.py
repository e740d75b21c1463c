"""Failing clearly: each failure names its cause and the fix in one paragraph, without a wall of
traceback (HYDRA_FULL_ERROR=1 shows it); a failing job of a multirun does not stop the others."""

import re

import pytest
import torch
from hydra import compose, initialize_config_dir
from torch import nn
from torch.utils.data import DataLoader, Dataset

from dml_bench.comparison.aggregate import collect
from dml_bench.comparison.runs import read_runs
from dml_bench.engine.trainer import Trainer, TrainerSettings
from dml_bench.evaluation.evaluator import RetrievalEvaluator
from dml_bench.losses import CrossEntropyLoss
from dml_bench.runtime.errors import UserError
from dml_bench.train import train
from tests.helpers.config import CONFIG_DIR
from tests.helpers.runs import exit_code, hydra_job, run_train
from tests.helpers.tiny_runs import tiny_args, tiny_glyphs, tiny_train


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tiny_glyphs(tmp_path_factory.mktemp("tiny_glyphs"))


def assert_one_paragraph(result) -> None:
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr


def train_in_process(args, output_dir, capsys) -> str:
    """The stderr of ``python -m dml_bench.train ARGS`` that failed with a UserError, run in this
    process (these tests are of the message; the tests above and test_bad_input's run the command
    line)."""
    with hydra_job(args, output_dir=output_dir) as cfg:
        assert exit_code(train, cfg) == 1
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr
    return stderr


def assert_last_checkpoint_is_good(path, failed_step: int) -> None:
    state = torch.load(path, weights_only=False)
    assert state["global_step"] == failed_step - 1 > 0
    assert all(torch.isfinite(value).all() for value in state["model"].values())


def test_non_finite_loss_names_step_and_value_and_keeps_the_last_good_checkpoint(data, tmp_path, capsys):
    # model.freeze_bn: otherwise BatchNorm's running statistics overflow first (next test).
    stderr = train_in_process(tiny_args(data, "optimizer.lr=1e6", "model.freeze_bn=true",
                                        "trainer.checkpoint_every_steps=1"), tmp_path, capsys)
    match = re.search(r"The loss became (\S+) at epoch 1, step (\d+)\. The last good checkpoint is (\S+)\.", stderr)
    assert match, stderr
    assert not torch.isfinite(torch.tensor(float(match[1])))
    assert_last_checkpoint_is_good(match[3], int(match[2]))
    assert not (tmp_path / "metrics.json").exists()


@pytest.mark.slow  # 8 s; the message with a last.pt is in the default suite
def test_non_finite_loss_before_the_first_last_checkpoint_names_the_best_one(data, tmp_path):
    result = tiny_train(*tiny_args(data, "optimizer.lr=1e6", "model.freeze_bn=true", f"hydra.run.dir={tmp_path}"),
                        check=False)
    assert_one_paragraph(result)
    best = tmp_path / "checkpoints" / "best.pt"
    assert best.is_file() and not (tmp_path / "checkpoints" / "last.pt").exists()
    said = r"The loss became \S+ at epoch 1, step \d+\. No last\.pt was written yet; the last good checkpoint is "
    assert re.search(said + rf"{re.escape(str(best))} \(epoch 0, before training\)\.", result.stderr), result.stderr


def test_non_finite_weights_are_never_checkpointed(data, tmp_path, capsys):
    stderr = train_in_process(tiny_args(data, "optimizer.lr=1e6", "trainer.checkpoint_every_steps=1"), tmp_path,
                              capsys)
    match = re.search(r"became non-finite at epoch 1, step (\d+)\. The last good checkpoint is (\S+)\.", stderr)
    assert match, stderr
    assert_last_checkpoint_is_good(match[2], int(match[1]))


def test_unknown_config_name_lists_the_choices(data):
    result = tiny_train(*tiny_args(data, "loss=no_such_loss"), check=False)
    assert_one_paragraph(result)
    assert "Could not find 'loss/no_such_loss'" in result.stderr
    listed = result.stderr.split("Available options in 'loss':", 1)[1].split()
    assert {"contrastive", "cross_entropy", "arcface"} <= set(listed)


# 6 s; Hydra's composition errors reach the console as test_unknown_config_name_lists_the_choices shows
@pytest.mark.slow
def test_override_of_a_missing_key_names_the_key(data):
    result = tiny_train(*tiny_args(data, "trainer.no_such_key=1"), check=False)
    assert_one_paragraph(result)
    assert "Could not override 'trainer.no_such_key'" in result.stderr


def test_hydra_full_error_raises_the_error_for_its_traceback(data, tmp_path, monkeypatch):
    """HYDRA_FULL_ERROR=1: the UserError is raised on, for Hydra to print its traceback (on the
    console: test_bad_input's test_hydra_full_error_still_shows_the_worker_traceback)."""
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with hydra_job(tiny_args(data, "trainer.amp=fp8"), output_dir=tmp_path) as cfg:
        with pytest.raises(UserError, match="trainer.amp=fp8 is not one of"):
            exit_code(train, cfg)


def test_a_failing_job_does_not_stop_the_multirun_and_is_listed_as_failed(data, tmp_path):
    sweep = tmp_path / "sweep"
    result = tiny_train("-m", *tiny_args(data, "trainer.amp=fp8,none", "trainer.epochs=1", f"hydra.sweep.dir={sweep}"))
    assert "Traceback" not in result.stdout + result.stderr
    assert not (sweep / "0" / "metrics.json").exists() and (sweep / "1" / "metrics.json").is_file()
    _, headers, rows = collect(read_runs([sweep]), per_run=True)
    status = {row[headers.index("trainer.amp")]: row[headers.index("status")] for row in rows}
    assert status == {"fp8": "failed: trainer.amp=fp8 is not one of auto, bf16, fp16, none.", "none": "completed"}


# ---- CUDA out of memory, raised on CPU by a module, through the real trainer ---------------------
class Points(Dataset):
    """Eight 2-D points of four classes, items shaped like RetrievalDataset's."""

    def __init__(self):
        self.labels = [0, 0, 1, 1, 2, 2, 3, 3]
        self.points = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return self.points[index], self.labels[index], index


class OutOfMemory(nn.Module):
    """A linear embedding that runs out of CUDA memory in training (or in evaluation) mode."""

    def __init__(self, in_training: bool):
        super().__init__()
        self.linear = nn.Linear(2, 2)
        self.in_training = in_training

    def forward(self, x):
        if self.training == self.in_training:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return self.linear(x)


@pytest.mark.parametrize(("in_training", "override"), [(True, "trainer.batch_size"),
                                                        (False, "evaluation.batch_size")])
def test_cuda_out_of_memory_suggests_a_smaller_batch(tmp_path, in_training, override):
    model, loss = OutOfMemory(in_training), CrossEntropyLoss(num_classes=4, embedding_size=2)
    trainer = Trainer(
        model, loss, torch.optim.SGD([*model.parameters(), *loss.parameters()], lr=0.1),
        DataLoader(Points(), batch_size=4), RetrievalEvaluator(DataLoader(Points(), batch_size=4), progress=False),
        TrainerSettings(run_dir=tmp_path, epochs=1, progress=False),
    )
    expected = rf"out of memory .* with {override}=4 .* Lower {override}, e\.g\. {override}=2"
    with pytest.raises(UserError, match=expected):
        trainer.fit()


def test_help_says_what_the_command_does_and_where_the_guides_are():
    help_text = run_train("--help").stdout
    assert help_text.startswith("python -m dml_bench.train ") and "docs/" in help_text.split("==", 1)[0]
    assert "== Configuration groups ==" in help_text and "loss: " in help_text
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        evaluate_help = compose("evaluate", return_hydra_config=True).hydra.help  # its own help, not train's
    assert evaluate_help.app_name == "dml_bench.evaluate" and "docs/" in evaluate_help.header
