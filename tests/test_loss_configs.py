"""Every loss config builds from the real config tree with train.py's builders and takes a finite
training step (with its usual miner); miners reach the losses that can use them, and a miner on
a loss that cannot is a config error."""

import json
import math

import pytest
import torch
from pytorch_metric_learning.losses import (
    ArcFaceLoss,
    CosFaceLoss,
    NormalizedSoftmaxLoss,
    ProxyAnchorLoss,
    ProxyNCALoss,
    SoftTripleLoss,
)

from dml_bench.evaluation.mi_terms import ENTROPY, MI_PROXY, TIGHTNESS
from dml_bench.runtime.errors import UserError
from dml_bench.train import train
from tests.helpers.build import build_model_and_loss
from tests.helpers.config import CONFIG_DIR, compose_config
from tests.helpers.runs import exit_code, fast_overrides, hydra_job, run_train

LOSSES = sorted(p.stem for p in (CONFIG_DIR / "loss").glob("*.yaml"))
MINERS = sorted(p.stem for p in (CONFIG_DIR / "miner").glob("*.yaml") if p.stem != "none")
OWN_LOSSES = ["center", "class_pair_nce", "cross_entropy", "pce", "snca", "spce"]
# The miner each pairwise loss is usually trained with; the other losses take none.
USUAL_MINER = {"contrastive": "pair_margin", "margin": "batch_hard", "multi_similarity": "multi_similarity",
               "ntxent": "multi_similarity", "triplet": "triplet_margin"}
# Losses over pairs of the batch: they need several images per class (sampler=m_per_class).
PAIRWISE = {"class_pair_nce", "contrastive", "margin", "multi_similarity", "ntxent", "snca", "spce", "triplet"}
NUM_CLASSES, PER_CLASS = 6, 4


def build(*overrides: str):
    """The quickstart's model, loss, miner and optimizer, built as train.py builds them."""
    cfg = compose_config(["experiment=quickstart", *overrides])
    torch.manual_seed(0)
    model, loss, _, miner, optimizer = build_model_and_loss(cfg, NUM_CLASSES)
    return cfg, model, loss, miner, optimizer


def batch(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(NUM_CLASSES * PER_CLASS, 3, 32, 32, generator=generator)
    return images, torch.arange(NUM_CLASSES).repeat_interleave(PER_CLASS)


@pytest.mark.parametrize("name", LOSSES)
def test_every_loss_config_trains_with_finite_gradients(name):
    """Two steps (a zero-initialised classifier passes no gradient to the network on the first)."""
    miner_name = USUAL_MINER.get(name, "none")
    _, model, loss, miner, optimizer = build(f"loss={name}", f"miner={miner_name}")
    images, labels = batch()
    start = {"model": [p.detach().clone() for p in model.parameters()],
             "loss": [p.detach().clone() for p in loss.parameters()]}
    for _ in range(2):
        embeddings = model(images)
        indices_tuple = miner(embeddings, labels) if miner is not None else None
        if indices_tuple is not None:
            assert len(indices_tuple[0]) > 0, f"{miner_name} mined nothing"
        value = loss(embeddings, labels, indices_tuple)
        assert value.ndim == 0 and torch.isfinite(value) and value.item() != 0
        optimizer.zero_grad()
        value.backward()
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        optimizer.step()
    for part, module in (("model", model), ("loss", loss)):
        moved = [not torch.equal(a, b) for a, b in zip(start[part], module.parameters())]
        assert all(moved) if part == "loss" else sum(moved) > len(moved) // 2, part


@pytest.mark.parametrize("name", LOSSES)
def test_loss_parameters_get_their_own_group_at_the_multiplied_lr(name):
    cfg, _, loss, _, optimizer = build(f"loss={name}", "optimizer.lr=0.03")
    own = list(loss.parameters())
    groups = [g for g in optimizer.param_groups if g["name"].startswith("loss")]
    assert sum(len(g["params"]) for g in groups) == len(own)
    if own:  # a loss with parameters shows its lr knob in its config (null: optimizer.lr)
        assert "param_lr_mult" in cfg.loss
        assert all(g["lr"] == pytest.approx(0.03 * (cfg.loss.param_lr_mult or 1.0)) for g in groups)
    else:
        assert "param_lr_mult" not in cfg.loss


def test_param_lr_mult_must_be_positive():
    with pytest.raises(UserError, match=r"loss.param_lr_mult=0"):
        build("loss=proxy_anchor", "loss.param_lr_mult=0")


@pytest.mark.parametrize("miner_name", MINERS)
def test_every_miner_gives_tuples_that_respect_the_labels(miner_name):
    _, model, _, miner, _ = build("loss=triplet", f"miner={miner_name}")
    images, labels = batch()
    tuples = miner(model(images), labels)
    if len(tuples) == 3:  # anchor, positive, negative
        anchors, positives, negatives = tuples
        tuples = (anchors, positives, anchors, negatives)
    a1, p, a2, n = tuples
    assert len(a1) > 0 and len(a2) > 0
    assert torch.equal(labels[a1], labels[p]) and not (a1 == p).any()
    assert (labels[a2] != labels[n]).all()


@pytest.mark.parametrize("kind", ["all", "hard", "semihard", "easy"])
def test_type_of_triplets_is_overridable(kind):
    _, _, _, miner, _ = build("loss=triplet", "miner=triplet_margin", f"miner.type_of_triplets={kind}")
    assert miner.type_of_triplets == kind
    assert compose_config(["miner=triplet_margin"]).miner.type_of_triplets == "semihard"


def test_unknown_type_of_triplets_is_a_user_error():
    with pytest.raises(UserError, match="miner.type_of_triplets=semi-hard"):
        build("loss=triplet", "miner=triplet_margin", "miner.type_of_triplets=semi-hard")


@pytest.mark.parametrize("name", OWN_LOSSES)
def test_miner_with_a_loss_that_takes_no_tuples_is_a_user_error(name):
    with pytest.raises(UserError) as error:
        build(f"loss={name}", "miner=multi_similarity")
    message = str(error.value)
    assert compose_config([f"loss={name}"]).loss._target_ in message
    assert "pytorch_metric_learning.miners.MultiSimilarityMiner" in message and "miner=none" in message


def test_miner_with_cross_entropy_stops_the_run_with_one_paragraph(tmp_path, capsys):
    with hydra_job(["experiment=quickstart", "miner=batch_hard", *fast_overrides()], output_dir=tmp_path) as cfg:
        assert exit_code(train, cfg) == 1
    stderr = capsys.readouterr().err
    assert "Error: miner._target_=pytorch_metric_learning.miners.BatchHardMiner" in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("loss_class", [ArcFaceLoss, CosFaceLoss, NormalizedSoftmaxLoss, ProxyAnchorLoss,
                                        ProxyNCALoss, SoftTripleLoss])
def test_classifier_losses_read_mined_tuples_as_sample_weights(loss_class):
    """What dml_bench.losses.compat says of them: triplets in which every sample is the anchor
    once weigh all samples 1 (the loss without a miner); triplets of a few anchors change it."""
    torch.manual_seed(0)
    loss = loss_class(num_classes=NUM_CLASSES, embedding_size=8)
    embeddings = torch.randn(NUM_CLASSES * PER_CLASS, 8)
    labels = torch.arange(NUM_CLASSES).repeat_interleave(PER_CLASS)
    everyone = (torch.arange(len(labels)),) * 3
    a_few = (torch.tensor([0, 4]), torch.tensor([1, 5]), torch.tensor([8, 12]))
    plain = loss(embeddings, labels)
    assert loss(embeddings, labels, everyone).item() == pytest.approx(plain.item(), rel=1e-5)
    assert loss(embeddings, labels, a_few).item() != pytest.approx(plain.item(), rel=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("name", LOSSES)
def test_every_loss_config_trains_end_to_end_on_the_quickstart(name, tmp_path):
    sampler = "m_per_class" if name in PAIRWISE else "random"
    run_train("experiment=quickstart", f"loss={name}", f"miner={USUAL_MINER.get(name, 'none')}",
              f"sampler={sampler}", *fast_overrides(), f"hydra.run.dir={tmp_path}")
    lines = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [0, 1]
    assert math.isfinite(lines[1]["train_loss"]) and set(lines[1]["mi"]) == {TIGHTNESS, ENTROPY, MI_PROXY}
