"""The logger config group: TensorBoard, CSV and MLflow record the same scalars, read back with
each library's own reader, and a resumed run continues its record."""

import csv
import json
import signal
import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dml_bench.builders import build_recorder
from dml_bench.engine.loggers import MLflow, ScalarsCSV, mlflow_key
from dml_bench.engine.recorders import RunContext, RunFiles, TensorBoard
from dml_bench.runtime.distributed import World
from dml_bench.runtime.errors import UserError
from dml_bench.runtime.files import read_jsonl
from dml_bench.runtime.interruption import Interrupted
from tests.helpers.config import compose_config
from tests.test_trainer_surface import make_trainer


def test_one_or_several_loggers_compose():
    assert list(compose_config([]).logger) == ["tensorboard"]
    assert list(compose_config(["logger=[tensorboard,csv]"]).logger) == ["tensorboard", "csv"]
    assert list(compose_config(["logger=csv"]).logger) == ["csv"]
    assert list(compose_config(["+logger=mlflow"]).logger) == ["tensorboard", "mlflow"]
    cfg = compose_config(["logger=mlflow", "logger.mlflow.tracking_uri=http://127.0.0.1:5000"])
    assert cfg.logger.mlflow.tracking_uri == "http://127.0.0.1:5000"


def test_run_files_are_written_whatever_the_loggers(tmp_path):
    recorder = build_recorder(compose_config(["logger=[]"]), tmp_path, World(), {})
    assert [type(r) for r in recorder.recorders] == [RunFiles]


def csv_scalars(path) -> dict[str, list[tuple[int, float]]]:
    scalars = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            scalars.setdefault(row["tag"], []).append((int(row["step"]), float(row["value"])))
    return scalars


def tb_scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def mlflow_run(run_dir):
    from mlflow.tracking import MlflowClient

    stored = json.loads((run_dir / MLflow.RUN_FILE).read_text())
    client = MlflowClient(tracking_uri=stored["tracking_uri"])
    return client, client.get_run(stored["run_id"])


def mlflow_scalars(run_dir, tags) -> dict[str, list[tuple[int, float]]]:
    client, run = mlflow_run(run_dir)
    return {tag: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, mlflow_key(tag))]
            for tag in tags}


def test_every_logger_records_the_same_scalars(tmp_path):
    pytest.importorskip("mlflow")
    cfg = compose_config(["logger=[tensorboard,csv,mlflow]"])
    recorder = build_recorder(cfg, tmp_path, World(), {})
    assert [type(r) for r in recorder.recorders] == [RunFiles, TensorBoard, ScalarsCSV, MLflow]
    make_trainer(tmp_path, recorder=recorder).fit()

    from_csv = csv_scalars(tmp_path / "scalars.csv")
    from_tb = tb_scalars(tmp_path / "tb")
    from_mlflow = mlflow_scalars(tmp_path, from_csv)
    assert set(from_csv) == set(from_tb) and "eval/recall@1" in from_csv and "train/loss" in from_csv
    for tag, values in from_csv.items():
        assert from_mlflow[tag] == values, tag
        assert [step for step, _ in from_tb[tag]] == [step for step, _ in values], tag
        assert [v for _, v in from_tb[tag]] == pytest.approx([v for _, v in values], rel=1e-6), tag  # float32
    history = read_jsonl(tmp_path / "history.jsonl")
    assert from_csv["eval/map@r"] == [(r["step"], r["metrics"]["map@r"]) for r in history]
    _, run = mlflow_run(tmp_path)
    assert run.info.status == "FINISHED" and run.info.run_name == str(tmp_path)
    assert run.data.params["loss._target_"] == cfg.loss._target_ and run.data.params["seed"] == "0"


def test_an_interrupted_run_leaves_what_its_loggers_logged_on_disk_and_mlflow_says_killed(tmp_path):
    pytest.importorskip("mlflow")
    recorder = build_recorder(compose_config(["logger=[tensorboard,csv,mlflow]"]), tmp_path, World(), {})
    trainer = make_trainer(tmp_path, recorder=recorder)
    step = trainer.train_step

    def ctrl_c_at_the_third_step(images, targets):
        if trainer.global_step == 2:
            raise KeyboardInterrupt
        return step(images, targets)

    trainer.train_step = ctrl_c_at_the_third_step
    with pytest.raises(Interrupted) as stopped:
        trainer.fit()
    assert (stopped.value.signum, stopped.value.during) == (signal.SIGINT, "epoch 1")
    # The loss of step 2 was logged after the last flush (the evaluation at step 0).
    assert [step for step, _ in csv_scalars(tmp_path / "scalars.csv")["train/loss"]] == [2]
    assert [step for step, _ in tb_scalars(tmp_path / "tb")["train/loss"]] == [2]
    _, run = mlflow_run(tmp_path)
    assert run.info.status == "KILLED"


def test_a_resumed_csv_drops_the_rows_logged_after_the_checkpoint(tmp_path):
    log = ScalarsCSV(RunContext(tmp_path))
    log.open(None, [])
    log.scalars({"train/loss": 1.0, "train/lr": 0.1}, 2)
    log.scalars({"train/loss": 0.5, "train/lr": 0.1}, 4)
    log.evaluation({})
    log.scalars({"train/loss": 9.0}, 6)  # logged by the interrupted run after its checkpoint at step 4
    log.close()
    log = ScalarsCSV(RunContext(tmp_path))
    log.open(4, [])
    log.scalars({"train/loss": 0.25}, 6)
    log.close()
    assert csv_scalars(tmp_path / "scalars.csv") == {"train/loss": [(2, 1.0), (4, 0.5), (6, 0.25)],
                                                     "train/lr": [(2, 0.1), (4, 0.1)]}
    log = ScalarsCSV(RunContext(tmp_path))
    log.open(None, [])  # started again from scratch
    log.close()
    assert csv_scalars(tmp_path / "scalars.csv") == {}


def test_a_resumed_run_continues_its_mlflow_run_and_a_restart_replaces_it(tmp_path):
    pytest.importorskip("mlflow")
    log = MLflow(RunContext(tmp_path, name="loss=contrastive,seed=1"))
    log.open(None, [])
    log.scalars({"eval/recall@1": 0.5}, 0)
    first_id = log.run_id  # interrupted: never closed
    log = MLflow(RunContext(tmp_path, name="loss=contrastive,seed=1"))
    log.open(0, [])
    log.scalars({"eval/recall@1": 0.75}, 4)
    log.close()
    client, run = mlflow_run(tmp_path)
    assert run.info.run_id == first_id and run.info.status == "FINISHED"
    assert run.info.run_name == "loss=contrastive,seed=1"
    assert [(m.step, m.value) for m in client.get_metric_history(first_id, "eval/recall_at_1")] == [(0, 0.5), (4, 0.75)]

    log = MLflow(RunContext(tmp_path))
    log.open(None, [])
    log.close()
    assert log.run_id != first_id and client.get_run(first_id).info.lifecycle_stage == "deleted"


def test_mlflow_missing_is_a_user_error_naming_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)  # what `import` meets without the package
    with pytest.raises(UserError, match=r"pip install -e '\.\[mlflow\]'"):
        MLflow(RunContext(tmp_path))


def test_retrieval_grids_go_to_the_tensorboard_logger_whichever_loggers_are_chosen(tmp_path, caplog):
    from PIL import Image

    from dml_bench.data import RetrievalDataset
    from dml_bench.visualize.recorder import RetrievalBoard

    (tmp_path / "splits").mkdir()
    for i in range(4):
        Image.new("RGB", (8, 8), (60 * i, 0, 0)).save(tmp_path / f"{i}.png")
    (tmp_path / "splits" / "test.csv").write_text("path,label\n0.png,0\n1.png,0\n2.png,1\n3.png,1\n")
    datasets = {"query": RetrievalDataset(tmp_path, "test")}
    cfg = compose_config(["trainer.log_retrievals=true", "logger=[tensorboard,csv]"])
    recorder = build_recorder(cfg, tmp_path, World(), datasets)
    assert [type(r) for r in recorder.recorders] == [RunFiles, RetrievalBoard, ScalarsCSV]
    assert recorder.recorders[1].log_dir == tmp_path / "tb"
    csv_only = build_recorder(compose_config(["trainer.log_retrievals=true", "logger=csv"]), tmp_path, World(),
                              datasets)
    assert [type(r) for r in csv_only.recorders] == [RunFiles, ScalarsCSV]
    assert "with logger=['csv'] none is drawn" in caplog.text  # said, not silently dropped


def test_with_mlflow_the_retrieval_grids_are_artifacts_of_the_run(tmp_path):
    """logger=mlflow with trainer.log_retrievals: each selected test evaluation's grids are PNG
    artifacts, pixel for pixel the grids TensorBoard shows; validation evaluations draw none."""
    pytest.importorskip("mlflow")
    import numpy as np
    import torch
    from PIL import Image

    from dml_bench.visualize.mlflow_grids import MLflowRetrievalBoard
    from dml_bench.visualize.retrievals import GridSettings, retrieval_grids
    from tests.test_visualize import evaluation_of, solid_images

    labels = [i % 5 for i in range(20)]
    dataset = solid_images(tmp_path / "data", "test", labels)
    embeddings, targets = torch.randn(20, 4, generator=torch.Generator().manual_seed(0)), torch.tensor(labels)
    cfg = compose_config(["trainer.log_retrievals=true", "logger=mlflow", "retrievals.k=3", "retrievals.queries=2"])
    recorder = build_recorder(cfg, tmp_path, World(), {"query": dataset})
    assert [type(r) for r in recorder.recorders] == [RunFiles, MLflowRetrievalBoard]
    mlflow = recorder.recorders[1]
    mlflow.open(None, [])
    mlflow.selected(2, evaluation_of(embeddings, targets, split="validation"))
    mlflow.selected(3, evaluation_of(embeddings, targets))
    mlflow.close()

    client, run = mlflow_run(tmp_path)
    listed = sorted(artifact.path for artifact in client.list_artifacts(run.info.run_id, "retrievals"))
    assert listed == ["retrievals/epoch_003_sample.png", "retrievals/epoch_003_worst.png"]
    expected = retrieval_grids(evaluation_of(embeddings, targets), dataset, None, GridSettings(k=3, queries=2))
    for name in ("sample", "worst"):
        path = client.download_artifacts(run.info.run_id, f"retrievals/epoch_003_{name}.png", str(tmp_path / name))
        drawn = np.asarray(Image.open(path).convert("RGB"))
        assert np.array_equal(drawn, np.asarray(expected[name].convert("RGB")))
