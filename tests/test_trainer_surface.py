"""The Trainer's joints: recorders, probes fed by the evaluation, any torch sampler."""

import json

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from dml_bench.data.samplers import UniformSampler, supports_mid_epoch_resume
from dml_bench.engine.recorders import Recorder, Recorders, RunFiles
from dml_bench.engine.trainer import Trainer, TrainerSettings
from dml_bench.evaluation import retrieval_metrics
from dml_bench.evaluation.evaluator import RetrievalEvaluator
from dml_bench.losses.cross_entropy import CrossEntropyLoss
from dml_bench.runtime.errors import UserError
from dml_bench.runtime.files import read_jsonl


class Points(Dataset):
    """Sixteen 3-D points of four classes, items shaped like RetrievalDataset's."""

    def __init__(self):
        self.labels = [0, 1, 2, 3] * 4
        self.points = torch.randn(16, 3, generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return self.points[index], self.labels[index], index


class Calls(Recorder):
    """A second logger, added without touching the loop: it keeps every call."""

    def __init__(self):
        self.opened, self.scalar_calls, self.evaluations, self.summaries, self.closed = [], [], [], [], False

    def open(self, resumed_at_step, history):
        self.opened.append((resumed_at_step, list(history)))

    def scalars(self, values, step):
        self.scalar_calls.append((step, dict(values)))

    def evaluation(self, record):
        self.evaluations.append(record)

    def summary(self, summary):
        self.summaries.append(summary)

    def close(self):
        self.closed = True


def make_trainer(run_dir, *, sampler=None, probes=None, recorder=None, epochs=2, checkpoint_every_steps=None):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    loss = CrossEntropyLoss(num_classes=4, embedding_size=2)
    optimizer = torch.optim.SGD([*model.parameters(), *loss.parameters()], lr=0.1)
    train_loader = DataLoader(Points(), batch_size=4, sampler=sampler, drop_last=True)
    evaluator = RetrievalEvaluator(DataLoader(Points(), batch_size=5), progress=False)
    settings = TrainerSettings(run_dir=run_dir, epochs=epochs, log_every_steps=2, progress=False,
                               checkpoint_every_steps=checkpoint_every_steps)
    return Trainer(model, loss, optimizer, train_loader, evaluator, settings, recorder=recorder, probes=probes)


def test_every_recorder_gets_the_same_records_the_run_files_hold(tmp_path):
    calls = Calls()
    summary = make_trainer(tmp_path, recorder=Recorders([RunFiles(tmp_path), calls])).fit()
    history = read_jsonl(tmp_path / "history.jsonl")
    assert [r["epoch"] for r in history] == [0, 1, 2]
    assert calls.evaluations == history
    assert calls.summaries == [summary] == [json.loads((tmp_path / "metrics.json").read_text())]
    assert calls.opened == [(None, [])] and calls.closed
    # 16 images in batches of 4: 4 steps an epoch, the loss logged every 2 steps, evaluations at steps 0, 4, 8.
    train_steps = [step for step, values in calls.scalar_calls if "train/loss" in values]
    eval_steps = [step for step, values in calls.scalar_calls if "eval/recall@1" in values]
    assert (train_steps, eval_steps) == ([2, 4, 6, 8], [0, 4, 8])
    assert [values["eval/map@r"] for step, values in calls.scalar_calls if step in eval_steps
            and "eval/map@r" in values] == [r["metrics"]["map@r"] for r in history]


def test_a_resumed_run_hands_its_recorders_the_evaluations_its_checkpoint_knew(tmp_path):
    make_trainer(tmp_path, recorder=RunFiles(tmp_path)).fit()
    before = read_jsonl(tmp_path / "history.jsonl")
    calls = Calls()
    make_trainer(tmp_path, recorder=calls, epochs=2).fit(resume_from=tmp_path / "checkpoints" / "last.pt")
    assert calls.opened == [(8, before)]
    assert calls.evaluations == []  # nothing left to train: the checkpoint is the last epoch's


def test_probes_receive_the_embeddings_the_metrics_were_computed_from(tmp_path):
    seen = []

    def probe(embeddings):
        seen.append(embeddings)
        return {"probe/norm": float(embeddings["query"].norm())}

    calls = Calls()
    make_trainer(tmp_path, probes={"norms": probe}, recorder=Recorders([RunFiles(tmp_path), calls]), epochs=1).fit()
    assert len(seen) == 2
    history = read_jsonl(tmp_path / "history.jsonl")
    for embeddings, record in zip(seen, history):
        assert embeddings["query"].shape == (16, 2)
        assert embeddings["query_labels"].tolist() == Points().labels
        expected = retrieval_metrics(embeddings["query"], embeddings["query_labels"])
        assert record["metrics"] == pytest.approx(expected)
        assert record["norms"] == {"probe/norm": pytest.approx(float(embeddings["query"].norm()))}
    assert [v["probe/norm"] for _, v in calls.scalar_calls if "probe/norm" in v] == \
        [r["norms"]["probe/norm"] for r in history]


def test_a_plain_torch_sampler_trains(tmp_path):
    sampler = RandomSampler(Points(), generator=torch.Generator().manual_seed(0))
    assert not supports_mid_epoch_resume(sampler)
    summary = make_trainer(tmp_path, sampler=sampler).fit()
    assert summary["last_epoch"] == 2


def test_mid_epoch_checkpoints_need_a_sampler_that_resumes_mid_epoch(tmp_path):
    with pytest.raises(UserError, match="checkpoint_every_steps needs a sampler .* RandomSampler cannot"):
        make_trainer(tmp_path, sampler=RandomSampler(Points()), checkpoint_every_steps=2)
    assert supports_mid_epoch_resume(UniformSampler(list(range(16)), batch_size=4))


def test_only_rank_zero_records_and_a_plain_recorder_records_nothing(tmp_path):
    make_trainer(tmp_path, recorder=Recorder()).fit()
    assert not (tmp_path / "history.jsonl").exists() and not (tmp_path / "metrics.json").exists()
    assert (tmp_path / "checkpoints" / "last.pt").is_file()


def test_evaluation_loaders_follow_the_trainer_settings_and_the_seed():
    from dml_bench.builders import build_eval_loaders
    from tests.helpers.config import compose_config

    cfg = compose_config(["trainer.pin_memory=true", "seed=7", "trainer.num_workers=0", "evaluation.batch_size=3"])
    loaders = build_eval_loaders(cfg, {"query": Points()}, torch.device("cpu"))
    assert (loaders["query"].pin_memory, loaders["query"].batch_size) == (True, 3)
    assert loaders["query"].generator.initial_seed() == 7


def test_the_run_folder_keeps_the_per_query_values_of_the_reported_epoch(tmp_path):
    from dml_bench.evaluation.per_query import check_against_metrics, load_per_query

    summary = make_trainer(tmp_path, recorder=RunFiles(tmp_path), epochs=3).fit()
    values, metadata = load_per_query(tmp_path / "per_query.npz")
    assert metadata["epoch"] == summary["best_epoch"]
    assert check_against_metrics(values, summary["metrics"]) == []
    assert len(values["query_index"]) == summary["metrics"]["num_queries"] == 16


def test_recorders_flush_before_every_checkpoint(tmp_path, monkeypatch):
    from dml_bench.engine import trainer as trainer_module

    events = []

    class Flushes(Recorder):
        def scalars(self, values, step):
            events.append(("scalars", step))

        def flush(self):
            events.append(("flush", None))

    save = trainer_module.ckpt.save_checkpoint
    monkeypatch.setattr(trainer_module.ckpt, "save_checkpoint",
                        lambda path, state: events.append(("save", path.name)) or save(path, state))
    make_trainer(tmp_path, recorder=Flushes(), epochs=2).fit()
    saves = [i for i, event in enumerate(events) if event[0] == "save"]
    assert len(saves) >= 3  # best.pt at least once, last.pt after each epoch
    assert all(events[i - 1] == ("flush", None) for i in saves)
