"""The MI view of a real run: the terms of the test embeddings at every evaluation, in
history.jsonl and TensorBoard; and the epoch length in the run's log."""

import json
import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dml_bench.data.loaders import make_loader
from dml_bench.data.retrieval_dataset import RetrievalDataset
from dml_bench.data.split_files import read_split, split_file
from dml_bench.evaluation.embed import extract_embeddings
from dml_bench.evaluation.mi_terms import ENTROPY, MI_PROXY, TIGHTNESS, mi_terms
from tests.helpers.runs import tensorboard_dir

MI_KEYS = (TIGHTNESS, ENTROPY, MI_PROXY)


def history(run_dir):
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]


def test_every_evaluation_records_the_mi_terms(quickstart_run):
    lines = history(quickstart_run)
    assert [line["epoch"] for line in lines] == [0, 1]
    for line in lines:
        terms = line["mi"]
        assert set(terms) == set(MI_KEYS) and all(math.isfinite(v) for v in terms.values())
        assert terms[MI_PROXY] == pytest.approx(terms[ENTROPY] - terms[TIGHTNESS])
        # Unit-norm features: the mean squared distance to a class mean lies in [0, 1].
        assert 0.0 < terms[TIGHTNESS] < 1.0


def test_mi_terms_are_those_of_the_evaluated_test_embeddings(quickstart_run):
    """Recomputed from the last checkpoint (the weights of the epoch-1 evaluation)."""
    cfg = OmegaConf.load(quickstart_run / ".hydra" / "config.yaml")
    model = instantiate(cfg.model)
    model.load_state_dict(torch.load(quickstart_run / "checkpoints" / "last.pt", weights_only=False)["model"])
    transform = instantiate(cfg.dataset.test_transform)
    test_set = RetrievalDataset(Path(cfg.dataset.root), cfg.dataset.query_split, transform)
    loader = make_loader(test_set, 200, num_workers=0)
    embeddings, labels = extract_embeddings(model, loader, torch.device("cpu"), progress=False)
    expected = mi_terms(embeddings, labels)
    logged = history(quickstart_run)[-1]["mi"]
    for key in MI_KEYS:
        assert logged[key] == pytest.approx(expected[key], rel=1e-4)


def test_tensorboard_holds_the_mi_terms_at_every_evaluation(quickstart_run):
    events = EventAccumulator(str(tensorboard_dir(quickstart_run)))
    events.Reload()
    logged = history(quickstart_run)
    for key in MI_KEYS:
        scalars = events.Scalars(key)
        assert [s.step for s in scalars] == [line["step"] for line in logged]
        assert [s.value for s in scalars] == pytest.approx([line["mi"][key] for line in logged], rel=1e-5)


def test_the_epoch_length_is_logged_at_the_start(quickstart_run):
    cfg = OmegaConf.load(quickstart_run / ".hydra" / "config.yaml")
    images = len(read_split(split_file(cfg.dataset.root, cfg.dataset.train_split)))
    batch = cfg.trainer.batch_size
    expected = (f"epoch length: {images // batch} batches of {batch} = {images // batch * batch} "
                f"of the {images} training images (UniformSampler)")
    log = (quickstart_run / "train.log").read_text()
    assert expected in log
    assert log.index("epoch length") < log.index("epoch 0:")
