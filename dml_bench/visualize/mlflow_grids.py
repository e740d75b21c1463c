"""``trainer.log_retrievals=true`` with ``logger=mlflow``: the retrieval grids as MLflow artifacts.

MLflow has no image timeline like TensorBoard's Images tab; each grid is a PNG artifact of the
run, ``retrievals/epoch_<EEE>_<sample|worst>.png``, drawn each time a test evaluation becomes
the selected one (a resumed run that draws an epoch again replaces its file). The embedding
projector is TensorBoard's alone.
"""

import logging
import time

from dml_bench.engine.loggers import MLflow
from dml_bench.engine.recorders import Recorder
from dml_bench.visualize.retrievals import GridSettings, retrieval_grids

log = logging.getLogger(__name__)


def artifact_file(epoch: int, name: str) -> str:
    return f"retrievals/epoch_{epoch:03d}_{name}.png"


class MLflowRetrievals(Recorder):
    """The grids of each selected test evaluation, logged to the run of ``mlflow`` (which must
    come before this recorder, so that its run is open). Validation evaluations are not drawn."""

    def __init__(self, mlflow: MLflow, datasets: dict, grid: GridSettings):
        self.mlflow, self.grid = mlflow, grid
        self.query_set, self.gallery_set = datasets["query"], datasets.get("gallery")

    def selected(self, epoch, evaluation):
        if evaluation.split != "test":
            return
        start = time.perf_counter()
        for name, grid in retrieval_grids(evaluation, self.query_set, self.gallery_set, self.grid).items():
            self.mlflow.client.log_image(self.mlflow.run_id, grid, artifact_file(epoch, name))
        log.info("retrieval grids of epoch %d logged to MLflow in %.2f s", epoch, time.perf_counter() - start)
