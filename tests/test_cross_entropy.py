"""The paper's cross-entropy: classifier, label smoothing, parameter groups and schedule."""

import math

import pytest
import torch

from dml_bench.engine.optim import WarmCosineLR, param_groups
from dml_bench.losses import CrossEntropyLoss
from dml_bench.models import Embedder, SmallConvNet


def test_label_smoothing_matches_the_papers_form_by_hand():
    # 3 classes, eps = 0.1: target 0.9 on the true class, 0.05 on the others (not PyTorch's 1/30).
    loss = CrossEntropyLoss(num_classes=3, embedding_size=2, label_smoothing=0.1)
    with torch.no_grad():
        loss.classifier.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        loss.classifier.bias.copy_(torch.tensor([0.0, 0.5, -1.0]))
    z = torch.tensor([[2.0, -1.0]], dtype=torch.float32)
    logits = [2.0, -0.5, 0.0]
    lse = math.log(sum(math.exp(v) for v in logits))
    log_p = [v - lse for v in logits]
    expected = -(0.9 * log_p[1] + 0.05 * log_p[0] + 0.05 * log_p[2])
    assert loss(z, torch.tensor([1])).item() == pytest.approx(expected, rel=1e-6)
    torch_form = torch.nn.functional.cross_entropy(torch.tensor([logits]), torch.tensor([1]), label_smoothing=0.1)
    assert abs(torch_form.item() - expected) > 1e-3


def test_classifier_is_zero_initialised_with_bias_and_gives_log_c_at_start():
    loss = CrossEntropyLoss(num_classes=10, embedding_size=4)
    assert loss.classifier.bias is not None
    assert torch.count_nonzero(loss.classifier.weight) == 0 and torch.count_nonzero(loss.classifier.bias) == 0
    value = loss(torch.randn(5, 4), torch.randint(0, 10, (5,)))
    assert value.item() == pytest.approx(math.log(10), rel=1e-6)


def test_cosine_variant_normalises_features_and_weights():
    loss = CrossEntropyLoss(num_classes=4, embedding_size=3, normalize=True, temperature=0.1)
    z = torch.randn(6, 3)
    assert torch.allclose(loss.logits(z), loss.logits(5 * z), atol=1e-5)
    assert loss.logits(z).abs().max() <= 1 / 0.1 + 1e-4


def test_miner_output_is_refused():
    loss = CrossEntropyLoss(num_classes=2, embedding_size=2)
    with pytest.raises(ValueError, match="does not use mined"):
        loss(torch.randn(2, 2), torch.tensor([0, 1]), indices_tuple=(torch.tensor([0]),) * 3)


def test_weight_decay_only_on_matrices_and_loss_parameters_in_their_own_group():
    model = Embedder(SmallConvNet((4, 8)), embedding_size=6)
    loss = CrossEntropyLoss(num_classes=3, embedding_size=6)
    groups = param_groups(model, loss, weight_decay=5e-4, loss_lr=0.5)
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"model", "model_no_decay", "loss", "loss_no_decay"}
    assert all(p.ndim > 1 for p in by_name["model"]["params"]) and by_name["model"]["weight_decay"] == 5e-4
    assert all(p.ndim <= 1 for p in by_name["model_no_decay"]["params"])
    assert by_name["model_no_decay"]["weight_decay"] == 0
    assert by_name["loss"]["params"] == [loss.classifier.weight] and by_name["loss"]["lr"] == 0.5
    counted = sum(len(g["params"]) for g in groups)
    assert counted == len(list(model.parameters())) + len(list(loss.parameters()))


def test_warmcos_schedule_follows_the_formula():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = WarmCosineLR(optimizer, total_iters=1000, warmup_iters=100)
    lrs = []
    for _ in range(1000):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    for i in (0, 50, 99, 100, 500, 999):
        assert lrs[i] == pytest.approx(min((i + 1) / 100, 0.5 * (1 + math.cos(math.pi * i / 1000))))
