"""The loggers of ``logger=csv`` and ``logger=mlflow`` (``logger=tensorboard``: ``recorders.TensorBoard``).

Each records the scalars the trainer tags (``train/loss``, ``eval/recall@1``, ``mi/entropy``...)
at their step, and a resumed run continues its own record the way TensorBoard's purge does.
"""

import csv
import io
import json
import os
import time
from pathlib import Path

from dml_bench.engine.recorders import Recorder, RunContext
from dml_bench.engine.resume import flatten
from dml_bench.runtime.errors import UserError
from dml_bench.runtime.files import atomic_write_text, write_json


class ScalarsCSV(Recorder):
    """Every scalar as one row ``step,tag,value`` of RUN_DIR/scalars.csv (long format: the same
    three columns whichever tags a run logs), flushed at each evaluation and checkpoint. A resumed run keeps the
    rows up to its checkpoint's step and drops those an interrupted run wrote after it; a run
    that starts from scratch starts the file afresh."""

    COLUMNS = ("step", "tag", "value")

    def __init__(self, run: RunContext):
        self.path = Path(run.run_dir) / "scalars.csv"
        self.file = None

    def open(self, resumed_at_step, history):
        kept = []
        if resumed_at_step is not None and self.path.exists():
            with open(self.path, newline="") as f:
                kept = [row for row in csv.DictReader(f) if int(row["step"]) <= resumed_at_step]
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=self.COLUMNS)
        writer.writeheader()
        writer.writerows(kept)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, text.getvalue())
        self.file = open(self.path, "a", newline="")
        self.writer = csv.writer(self.file)

    def scalars(self, values, step):
        self.writer.writerows((step, tag, float(value)) for tag, value in values.items())

    def flush(self):
        self.file.flush()

    def close(self):
        if self.file is not None:
            self.file.close()


def mlflow_key(tag: str) -> str:
    """MLflow allows no ``@`` in a name: ``eval/recall@1`` is logged as ``eval/recall_at_1``."""
    return tag.replace("@", "_at_")


class MLflow(Recorder):
    """Scalars as MLflow metrics and the resolved config as the run's parameters, through
    MLflow's client (``pip install -e '.[mlflow]'``).

    ``tracking_uri`` null: a local file store in RUN_DIR/mlruns (MLflow 3 keeps that store in
    maintenance mode and asks for ``MLFLOW_ALLOW_FILE_STORE=true``, set here for file stores);
    otherwise a tracking server, ``http://host:5000``, or any URI MLflow takes. Runs go to the
    experiment ``experiment``, named by the multirun job's overrides or the run folder. The MLflow
    run's id is kept in RUN_DIR/mlflow_run.json: a resumed run continues the same MLflow run.
    MLflow cannot delete metric values, so the steps an interrupted run logged after its
    checkpoint appear twice in a metric's history; a run that starts from scratch deletes its
    earlier MLflow run and starts a new one.
    """

    RUN_FILE = "mlflow_run.json"

    def __init__(self, run: RunContext, tracking_uri: str | None = None, experiment: str = "dml_bench",
                 log_params: bool = True):
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise UserError("logger=mlflow needs MLflow: pip install -e '.[mlflow]' (the mlflow-skinny client), "
                            "or choose another logger, logger=tensorboard or logger=csv.") from None
        self.run_dir = Path(run.run_dir)
        self.tracking_uri = tracking_uri or (self.run_dir / "mlruns").resolve().as_uri()
        if self.tracking_uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        self.experiment, self.run_name = experiment, run.name or str(self.run_dir)
        params = flatten(run.config) if log_params else {}
        self.params = {key: str(value)[:500] for key, value in params.items() if key}  # 500: MLflow's shortest limit
        self.run_id = None

    def open(self, resumed_at_step, history):
        run_file = self.run_dir / self.RUN_FILE
        earlier = json.loads(run_file.read_text()) if run_file.exists() else {}
        if earlier.get("tracking_uri") != self.tracking_uri:
            earlier = {}
        if resumed_at_step is not None and earlier:
            self.run_id = earlier["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            return
        if earlier:
            self.client.delete_run(earlier["run_id"])
        run = self.client.create_run(self.experiment_id(), run_name=self.run_name, tags={"run_dir": str(self.run_dir)})
        self.run_id = run.info.run_id
        write_json(run_file, {"tracking_uri": self.tracking_uri, "run_id": self.run_id})
        from mlflow.entities import Param

        params = [Param(key, value) for key, value in self.params.items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 parameters a call
            self.client.log_batch(self.run_id, params=params[start:start + 100])

    def experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(self.experiment)
        except MlflowException:  # another job of the sweep created it meanwhile
            return self.client.get_experiment_by_name(self.experiment).experiment_id

    def scalars(self, values, step):
        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(mlflow_key(tag), float(value), timestamp, step)
                                                    for tag, value in values.items()])

    def close(self):
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, "FINISHED")

    def interrupted(self):
        """MLflow's status of a run that was stopped (resuming sets it RUNNING again)."""
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, "KILLED")
