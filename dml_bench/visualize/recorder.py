"""``trainer.log_retrievals=true``: the TensorBoard recorder, plus pictures of the selected epoch."""

import logging
import time

import numpy as np

from dml_bench.engine.recorders import RunContext, TensorBoard, tensorboard_dir
from dml_bench.visualize.projector import Projector
from dml_bench.visualize.retrievals import GridSettings, retrieval_grids

log = logging.getLogger(__name__)


class RetrievalBoard(TensorBoard):
    """TensorBoard's scalars, and for each test evaluation that becomes the selected one: its
    retrieval grids in the Images tab (``retrievals/sample``, ``retrievals/worst``, at the step of
    the evaluated epoch) and, written once the run has ended, the embedding projector of the
    last one. ``datasets``: the test split(s) the evaluations embed (``query``, and ``gallery``
    for In-Shop). Validation evaluations (``protocol=rigorous``) are not drawn: the test
    evaluation of the checkpoint they select comes after training, and is written at once.
    """

    def __init__(self, log_dir, datasets: dict, grid: GridSettings, projector: Projector | None):
        super().__init__(log_dir)
        self.query_set, self.gallery_set = datasets["query"], datasets.get("gallery")
        self.grid, self.projector = grid, projector
        self.steps = {}  # epoch -> the step it was evaluated at
        self.projected = None  # (step, points) the projector will show
        self.ended = False

    def open(self, resumed_at_step, history):
        super().open(resumed_at_step, history)
        self.steps = {record["epoch"]: record["step"] for record in history}

    def evaluation(self, record):
        self.steps[record["epoch"]] = record["step"]
        super().evaluation(record)

    def selected(self, epoch, evaluation):
        if evaluation.split != "test":
            return
        step, start = self.steps[epoch], time.perf_counter()
        for name, grid in retrieval_grids(evaluation, self.query_set, self.gallery_set, self.grid).items():
            self.writer.add_image(f"retrievals/{name}", np.asarray(grid), step, dataformats="HWC")
        log.info("retrieval grids of epoch %d logged in %.2f s", epoch, time.perf_counter() - start)
        if self.projector is not None:
            self.projected = (step, self.projector.points(evaluation))
        if self.ended:  # the test after training: write it all now
            self.close()
        else:
            self.writer.flush()

    def interrupted(self):
        self.projected = None  # the projector shows the run's end: the resumed run writes it
        super().interrupted()

    def close(self):
        if self.projected is not None:
            (step, points), start = self.projected, time.perf_counter()
            self.projector.write(self.writer, points, step)
            log.info("embedding projector of %d points written in %.2f s", len(points), time.perf_counter() - start)
            self.projected = None
        super().close()
        self.ended = True


def tensorboard_logger(run: RunContext, *, retrievals: bool) -> TensorBoard:
    """``logger=tensorboard`` (configs/logger/tensorboard.yaml): the run's scalars, and with
    ``retrievals`` (``trainer.log_retrievals``) a ``RetrievalBoard`` that also draws the selected
    epoch's retrieval grids (``retrievals.*``) and, with ``projector.max_points`` > 0, the
    embedding projector."""
    if not retrievals:
        return TensorBoard.for_run(run)
    grid, points = GridSettings.of(run.config, run.config["retrievals"]), run.config["projector"]["max_points"]
    projector = Projector(run.test_sets, points, grid.seed, grid.distance) if points else None
    return RetrievalBoard(tensorboard_dir(run), run.test_sets, grid, projector)
