"""What a run records, behind one small interface.

The trainer calls ``open`` once, ``scalars`` and ``evaluation`` as it goes, ``selected`` whenever
an evaluation becomes the one the run reports, ``flush`` after each evaluation and before each
checkpoint (the points a run resumes from), ``summary`` once at the end and ``close``; or, when
the run is interrupted (Ctrl-C, SIGTERM), ``interrupted`` instead of the last two.
``RunFiles`` writes history.jsonl, per_query.npz and metrics.json; ``TensorBoard`` the event
files; ``Recorders`` passes every call on to several. Another logger is one more subclass in the
list the training script builds: the loop does not change. Only rank 0 records: the other ranks
get a plain ``Recorder``, which records nothing. The loggers of the ``logger`` config group
(TensorBoard here, the others in ``engine.loggers``) are built from a ``RunContext``.
"""

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

from dml_bench.evaluation.evaluator import Evaluation
from dml_bench.evaluation.per_query import PER_QUERY_FILE, save_per_query
from dml_bench.runtime.files import append_jsonl, write_json, write_jsonl


@dataclass(frozen=True)
class RunContext:
    """What a logger is told of the run it records: its folder, its name in a multirun (the job's
    overrides, ``loss=contrastive,seed=1``; None for a single run), its resolved config, and the
    test split(s) its evaluations embed (``query``, and ``gallery`` for In-Shop), which loggers
    that draw retrievals show."""

    run_dir: Path
    name: str | None = None
    config: dict = field(default_factory=dict)
    test_sets: dict = field(default_factory=dict)


class Recorder:
    """Records nothing; subclasses override the calls they record."""

    def open(self, resumed_at_step: int | None, history: list[dict]) -> None:
        """A run starts (``resumed_at_step`` None) or resumes after that step; ``history`` holds the
        evaluation records made before (empty for a new run)."""

    def scalars(self, values: dict[str, float], step: int) -> None:
        """Values of tagged scalars (``train/loss``, ``eval/recall@1``, ``mi/entropy``...) at ``step``."""

    def evaluation(self, record: dict) -> None:
        """One evaluation: epoch, step, train_loss, elapsed_s, metrics and each probe's values."""

    def selected(self, epoch: int, evaluation: Evaluation) -> None:
        """``evaluation`` (of epoch ``epoch``) is now the one the run reports: the best so far on
        the monitored metric, or the test of the checkpoint selected on validation."""

    def flush(self) -> None:
        """Make what was recorded so far durable: a run resumed from the checkpoint that follows
        must find it."""

    def summary(self, summary: dict) -> None:
        """The run's result (the selected epoch's metrics...): written at the end, and again when a
        later step (the test of the checkpoint selected on validation) completes it."""

    def close(self) -> None:
        pass

    def interrupted(self) -> None:
        """The run stops before its end, to be resumed: what was recorded must be on disk."""
        self.flush()
        self.close()


class Recorders(Recorder):
    def __init__(self, recorders: list[Recorder]):
        self.recorders = list(recorders)

    def open(self, resumed_at_step, history):
        for recorder in self.recorders:
            recorder.open(resumed_at_step, history)

    def scalars(self, values, step):
        for recorder in self.recorders:
            recorder.scalars(values, step)

    def evaluation(self, record):
        for recorder in self.recorders:
            recorder.evaluation(record)

    def selected(self, epoch, evaluation):
        for recorder in self.recorders:
            recorder.selected(epoch, evaluation)

    def flush(self):
        for recorder in self.recorders:
            recorder.flush()

    def summary(self, summary):
        for recorder in self.recorders:
            recorder.summary(summary)

    def close(self):
        for recorder in self.recorders:
            recorder.close()

    def interrupted(self):
        for recorder in self.recorders:
            recorder.interrupted()


class RunFiles(Recorder):
    """``history.jsonl`` (one line per evaluation, appended and synced as it is made),
    ``per_query.npz`` (each query's values in the reported evaluation, see
    ``evaluation.per_query``) and ``metrics.json`` (the summary) in ``run_dir``. A resumed run's
    history is rewritten to the evaluations its checkpoint knew: lines an interrupted run wrote
    after it are dropped."""

    def __init__(self, run_dir: str | Path):
        self.history_path = Path(run_dir) / "history.jsonl"
        self.metrics_path = Path(run_dir) / "metrics.json"
        self.per_query_path = Path(run_dir) / PER_QUERY_FILE

    def open(self, resumed_at_step, history):
        self.history_path.parent.mkdir(parents=True, exist_ok=True)
        write_jsonl(self.history_path, history)

    def evaluation(self, record):
        append_jsonl(self.history_path, record)

    def selected(self, epoch, evaluation):
        if evaluation.per_query is not None:
            save_per_query(self.per_query_path, evaluation.per_query, {"epoch": epoch})

    def summary(self, summary):
        write_json(self.metrics_path, summary)


class TensorBoard(Recorder):
    """Scalars as TensorBoard events in ``log_dir``. Resuming purges the events an interrupted run
    logged after its checkpoint's step (all of them for a run that restarts from scratch)."""

    def __init__(self, log_dir: str | Path):
        self.log_dir = Path(log_dir)
        self.writer = None

    @classmethod
    def for_run(cls, run: RunContext) -> "TensorBoard":
        return cls(tensorboard_dir(run))

    def open(self, resumed_at_step, history):
        purge_step = 0 if resumed_at_step is None else resumed_at_step + 1
        self.writer = SummaryWriter(self.log_dir, purge_step=purge_step)

    def scalars(self, values, step):
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def flush(self):
        self.writer.flush()

    def close(self):
        if self.writer is not None:
            self.writer.close()


def tensorboard_dir(run: RunContext) -> Path:
    """RUN_DIR/tb, or RUN_DIR/tb/NAME for a multirun job: TensorBoard names a run by its folder,
    so ``tensorboard --logdir SWEEP_DIR`` shows ``0/tb/loss=contrastive,seed=1``."""
    return Path(run.run_dir) / "tb" / folder_name(run.name) if run.name else Path(run.run_dir) / "tb"


def folder_name(name: str) -> str:
    """``name`` as one folder: slashes (of path values) become underscores, and a name longer
    than file systems allow is cut, with a hash of the whole to keep it unique."""
    safe = name.replace("/", "_")
    if len(safe.encode()) <= 200:
        return safe
    return safe.encode()[:180].decode(errors="ignore") + "-" + hashlib.sha256(name.encode()).hexdigest()[:12]
