"""torchrun with 2 CPU processes under gloo: the ranks share one run folder that rank 0 alone
writes; killed with SIGKILL and resumed under torchrun, the run ends with the metrics of a single
process trained on the same global batches; interrupted, it says so once.

Tolerance: the ranks add the gradients of their halves of each batch where one process sums the
whole batch at once, so results agree up to floating-point rounding, which training amplifies (the
more, the larger the learning rate: 0.05 here): history's metrics within 0.01 (a few of the 428
queries) and train losses within 0.5%.
model.freeze_bn=true keeps BatchNorm in eval mode: per-rank batch statistics would otherwise
differ from the global batch's (SyncBatchNorm, used on CUDA, has no CPU kernel).
"""

import json
import signal
import subprocess
import time

import pytest

from dml_bench.train import train
from tests.helpers.runs import hydra_job
from tests.helpers.tiny_runs import (
    TORCHRUN,
    kill_when,
    read_results,
    start_train,
    tiny_args,
    tiny_glyphs,
    torchrun_train,
)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tiny_glyphs(tmp_path_factory.mktemp("tiny_glyphs"))


@pytest.mark.slow  # 30 s; test_distributed checks a DDP step, test_resume a single process resumed after SIGKILL
def test_torchrun_run_resumes_after_sigkill_and_matches_a_single_process(data, tmp_path):
    args = tiny_args(data, "trainer.epochs=2", "model.freeze_bn=true", "loss=contrastive", "miner=multi_similarity",
                     "optimizer.lr=0.05")
    single = tmp_path / "single"
    with hydra_job(args, output_dir=single) as cfg:  # in this process: the torchrun launches are under test
        train(cfg)

    def run_dirs():  # Hydra's default run folder, under the working directory
        return [path for path in (tmp_path / "outputs").glob("*/*")]

    kill_when(start_train("trainer=ddp", *args, launcher=TORCHRUN, cwd=tmp_path),
              lambda: any((path / "checkpoints" / "last.pt").exists() for path in run_dirs()))
    [run_dir] = run_dirs()
    assert not (run_dir / "metrics.json").exists()
    torchrun_train("trainer=ddp", *args, f"resume={run_dir}", cwd=tmp_path)
    assert run_dirs() == [run_dir]

    (metrics, history), (single_metrics, single_history) = read_results(run_dir), read_results(single)
    assert metrics["best_epoch"] == single_metrics["best_epoch"]
    assert [r["epoch"] for r in history] == [r["epoch"] for r in single_history] == [0, 1, 2]
    assert history[0] == single_history[0]  # the untrained model: no gradient involved yet
    for record, expected in zip(history[1:], single_history[1:]):
        assert record["train_loss"] == pytest.approx(expected["train_loss"], rel=5e-3)
        assert record["metrics"] == pytest.approx(expected["metrics"], abs=0.01)

    log = (run_dir / "train.log").read_text()
    assert log.count("epoch 0: recall@1") == 1 and log.count("resumed from") == 1
    assert len(list((run_dir / "tb").glob("events.out.tfevents.*"))) == 2  # one per launch
    assert json.loads((run_dir / "run_info.json").read_text())["world_size"] == 2


@pytest.mark.slow  # 8 s; the single-process interruption test is in the default suite
def test_an_interrupted_torchrun_run_says_so_once(data, tmp_path):
    run = start_train("trainer=ddp", *tiny_args(data), launcher=TORCHRUN, cwd=tmp_path, stdout=subprocess.PIPE)
    while not list(tmp_path.glob("outputs/*/*/checkpoints/last.pt")):
        assert run.poll() is None, run.stderr.read()[-3000:]
        time.sleep(0.01)
    run.send_signal(signal.SIGTERM)  # torchrun hands it to every rank
    stdout, _ = run.communicate(timeout=300)
    [run_dir] = tmp_path.glob("outputs/*/*")
    said = "interrupted (SIGTERM) during epoch 2; continue it with: torchrun ... -m dml_bench.train trainer=ddp "
    [logged] = [line for line in (run_dir / "train.log").read_text().splitlines() if "interrupted" in line]
    assert said in logged and logged.endswith(f" resume={run_dir}"), logged
    assert stdout.count("interrupted (") == 1, stdout[-3000:]
