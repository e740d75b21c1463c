"""``trainer.log_retrievals=true`` with ``logger=mlflow``: the retrieval grids as MLflow artifacts.

MLflow has no image timeline like TensorBoard's Images tab; each grid is a PNG artifact of the
run, ``retrievals/epoch_<EEE>_<sample|worst>.png``, drawn each time a test evaluation becomes
the selected one (a resumed run that draws an epoch again replaces its file). The embedding
projector is TensorBoard's alone.
"""

import logging
import time

from dml_bench.engine.loggers import MLflow
from dml_bench.engine.recorders import RunContext
from dml_bench.visualize.retrievals import GridSettings, retrieval_grids

log = logging.getLogger(__name__)


def artifact_file(epoch: int, name: str) -> str:
    return f"retrievals/epoch_{epoch:03d}_{name}.png"


class MLflowRetrievalBoard(MLflow):
    """MLflow's metrics and parameters, and the grids of each selected test evaluation of the
    run's test split(s) as artifacts. Validation evaluations are not drawn."""

    def __init__(self, run: RunContext, **options):
        super().__init__(run, **options)
        self.grid = GridSettings.of(run.config, run.config["retrievals"])
        self.query_set, self.gallery_set = run.test_sets["query"], run.test_sets.get("gallery")

    def selected(self, epoch, evaluation):
        if evaluation.split != "test":
            return
        start = time.perf_counter()
        for name, grid in retrieval_grids(evaluation, self.query_set, self.gallery_set, self.grid).items():
            self.client.log_image(self.run_id, grid, artifact_file(epoch, name))
        log.info("retrieval grids of epoch %d logged to MLflow in %.2f s", epoch, time.perf_counter() - start)


def mlflow_logger(run: RunContext, *, retrievals: bool, **options) -> MLflow:
    """``logger=mlflow`` (configs/logger/mlflow.yaml): ``options`` are ``MLflow``'s; with
    ``retrievals`` (``trainer.log_retrievals``) the retrieval grids (``retrievals.*``) go to the
    run as artifacts."""
    return MLflowRetrievalBoard(run, **options) if retrievals else MLflow(run, **options)
