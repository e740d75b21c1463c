"""Own losses against plain float64 loops, the PCE bound of docs/pce.md, Lemma 1's identity."""

import math

import pytest
import torch
import torch.nn.functional as F

from dml_bench.evaluation.mi_terms import TIGHTNESS, mi_terms
from dml_bench.losses import CenterLoss, PCELoss, SNCALoss, SPCELoss
from dml_bench.losses.pce import concavity_lambda

# Class 2 has a single sample: an anchor without positives for SNCA.
LABELS = [0, 1, 0, 1, 1, 2, 0]
DIM = 4


def batch(seed: int, labels=LABELS, dim: int = DIM):
    generator = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(len(labels), dim, generator=generator, dtype=torch.float64)
    return embeddings, torch.tensor(labels)


def dot(a, b) -> float:
    return sum(x * y for x, y in zip(a, b))


def squared_distance(a, b) -> float:
    return sum((x - y) ** 2 for x, y in zip(a, b))


def log_sum_exp(values) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def cross_entropy_loop(logits, labels) -> float:
    """(1/n) sum_i [lse_k logits_ik - logits_{i, y_i}] over lists of lists."""
    return sum(log_sum_exp(row) - row[y] for row, y in zip(logits, labels)) / len(labels)


# ---------------------------------------------------------------- center


def test_center_loss_matches_loop():
    z, y = batch(0)
    loss = CenterLoss(num_classes=3, embedding_size=DIM, center_weight=0.3).double()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in loss.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    weight, bias = loss.cross_entropy.classifier.weight.tolist(), loss.cross_entropy.classifier.bias
    centers, rows, labels = loss.centers.tolist(), z.tolist(), y.tolist()
    logits = [[dot(w, zi) + b for w, b in zip(weight, bias.tolist())] for zi in rows]
    center_term = sum(0.5 * squared_distance(zi, centers[yi]) for zi, yi in zip(rows, labels))
    expected = cross_entropy_loop(logits, labels) + 0.3 * center_term / len(labels)
    assert loss(z, y).item() == pytest.approx(expected, rel=1e-6)


# ---------------------------------------------------------------- SNCA


def snca_loop(rows, labels, temperature, normalize) -> float:
    if normalize:
        rows = [[x / math.sqrt(dot(r, r)) for x in r] for r in rows]
    terms = []
    for i, (zi, yi) in enumerate(zip(rows, labels)):
        others = [j for j in range(len(rows)) if j != i]
        positives = [dot(zi, rows[j]) / temperature for j in others if labels[j] == yi]
        others = [dot(zi, rows[k]) / temperature for k in others]
        if positives:
            terms.append(log_sum_exp(others) - log_sum_exp(positives))
    return sum(terms) / len(terms)


@pytest.mark.parametrize("normalize", [True, False])
def test_snca_matches_loop(normalize):
    z, y = batch(2)
    expected = snca_loop(z.tolist(), y.tolist(), 0.5, normalize)
    loss = SNCALoss(temperature=0.5, normalize=normalize)
    assert loss(z, y).item() == pytest.approx(expected, rel=1e-10)


def test_snca_without_any_positive_is_zero_with_gradient():
    z, y = batch(3, labels=[0, 1, 2])
    z.requires_grad_(True)
    value = SNCALoss()(z, y)
    value.backward()
    assert value.item() == 0.0 and torch.equal(z.grad, torch.zeros_like(z))


# ---------------------------------------------------------------- SPCE


def spce_loop(rows, labels) -> float:
    n, classes = len(rows), sorted(set(labels))
    pairs = [(i, j) for i in range(n) for j in range(n) if labels[j] == labels[i]]
    tightness = -sum(dot(rows[i], rows[j]) for i, j in pairs)
    contrastive = 0.0
    for zi in rows:
        contrastive += log_sum_exp(
            [sum(dot(zi, zj) for zj, yj in zip(rows, labels) if yj == k) / n for k in classes]
        )
    return tightness / n**2 + contrastive / n


def test_spce_matches_eq15_loop():
    z, y = batch(4, labels=[5, 9, 5, 9, 9, 7, 5])  # class labels need not be 0..K-1
    assert SPCELoss()(z, y).item() == pytest.approx(spce_loop(z.tolist(), y.tolist()), rel=1e-12)


def test_spce_is_cross_entropy_at_class_sums_over_n():
    z, y = batch(5)
    present = sorted(set(y.tolist()))
    theta = torch.stack([z[y == k].sum(dim=0) / len(y) for k in present])
    targets = torch.tensor([present.index(k) for k in y.tolist()])
    log_probs = torch.log_softmax(z @ theta.T, dim=1)
    expected = -log_probs[torch.arange(len(y)), targets].mean()
    assert SPCELoss()(z, y).item() == pytest.approx(expected.item(), rel=1e-12)


# ---------------------------------------------------------------- PCE (docs/pce.md)

NUM_CLASSES = 3


def pce_with(theta_t: torch.Tensor) -> PCELoss:
    loss = PCELoss(NUM_CLASSES, DIM).double()
    loss.classifier.copy_(theta_t)
    return loss


def cross_entropy(theta: torch.Tensor, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """CE(theta, Z) without bias, over all classes."""
    return F.cross_entropy(z @ theta.T, y)


def f2(theta, z, lam):
    return torch.logsumexp(z @ theta.T, dim=1).mean() - 0.5 * lam * theta.pow(2).sum()


def bound(theta, theta_t, z, y, lam):
    """A_t(theta) = f1(theta) + f2(theta_t) + <grad f2(theta_t), theta - theta_t>."""
    m = F.one_hot(y, NUM_CLASSES).to(z.dtype).T @ z / len(y)
    f1 = -(theta * m).sum() + 0.5 * lam * theta.pow(2).sum()
    theta_t = theta_t.clone().requires_grad_(True)
    value = f2(theta_t, z, lam)
    (gradient,) = torch.autograd.grad(value, theta_t)
    return f1 + value.detach() + (gradient * (theta - theta_t.detach())).sum()


def test_concavity_lambda_is_half_the_top_eigenvalue_in_both_gram_shapes():
    for n, d in [(6, 3), (3, 6)]:
        z, _ = batch(17, labels=[0] * n, dim=d)
        top = max(torch.linalg.eigvalsh(z.T @ z / n).tolist())
        assert concavity_lambda(z).item() == pytest.approx(top / 2, rel=1e-10)


def test_f2_is_concave_along_random_directions():
    generator = torch.Generator().manual_seed(6)
    for trial in range(20):
        z, _ = batch(100 + trial)
        z = z * (1 + trial)  # features of growing norm
        lam = concavity_lambda(z)
        theta = 3 * torch.randn(NUM_CLASSES, DIM, generator=generator, dtype=torch.float64)
        direction = torch.randn(NUM_CLASSES, DIM, generator=generator, dtype=torch.float64)
        for step in (1e-2, 0.3, 3.0):
            second_difference = (
                f2(theta + step * direction, z, lam)
                + f2(theta - step * direction, z, lam)
                - 2 * f2(theta, z, lam)
            )
            assert second_difference.item() <= 1e-10


def test_concavity_lambda_cannot_be_lowered():
    # Worst case of docs/pce.md section 2: two classes, p = (1/2, 1/2) at theta = 0, and the
    # direction (u, -u) with u the top eigenvector of Z^T Z / n: f2 has zero curvature there.
    z, _ = batch(16)
    top_vector = torch.linalg.eigh(z.T @ z / len(z)).eigenvectors[:, -1]
    direction = torch.stack([top_vector, -top_vector])
    origin = torch.zeros_like(direction)
    lam = concavity_lambda(z)
    step = 1e-3

    def second_difference(factor):
        value = f2(step * direction, z, factor * lam) + f2(-step * direction, z, factor * lam)
        return (value - 2 * f2(origin, z, factor * lam)).item()

    assert second_difference(1.0) <= 1e-10  # concave, O(step^4) only
    assert second_difference(0.9) > step**2 * 0.1 * lam.item()  # convex: 2 * 0.1 lambda step^2


def test_bound_majorises_cross_entropy_with_equality_at_expansion_point():
    z, y = batch(7)
    lam = concavity_lambda(z)
    generator = torch.Generator().manual_seed(8)
    theta_t = torch.randn(NUM_CLASSES, DIM, generator=generator, dtype=torch.float64)
    at_expansion_point = bound(theta_t, theta_t, z, y, lam).item()
    assert at_expansion_point == pytest.approx(cross_entropy(theta_t, z, y).item(), rel=1e-12)
    for scale in (0.1, 1.0, 10.0):
        for _ in range(10):
            theta = theta_t + scale * torch.randn(theta_t.shape, generator=generator).double()
            assert cross_entropy(theta, z, y) <= bound(theta, theta_t, z, y, lam) + 1e-12


def test_pce_matches_pairwise_loop_and_sits_below_the_bound():
    z, y = batch(9)
    generator = torch.Generator().manual_seed(10)
    theta_t = torch.randn(NUM_CLASSES, DIM, generator=generator, dtype=torch.float64)
    rows, labels, n = z.tolist(), y.tolist(), len(y)
    lam = max(torch.linalg.eigvalsh(z.T @ z / n).tolist()) / 2
    classifier = theta_t.tolist()
    p = [[dot(w, zi) for w in classifier] for zi in rows]
    p = [[math.exp(logit - log_sum_exp(row)) for logit in row] for row in p]
    logits = [
        [
            dot(classifier[k], zi)
            + sum(((labels[j] == k) - p[j][k]) * dot(zi, rows[j]) for j in range(n)) / (lam * n)
            for k in range(NUM_CLASSES)
        ]
        for zi in rows
    ]
    loss = pce_with(theta_t)
    pce = loss(z, y)
    assert pce.dtype == torch.float64
    assert pce.item() == pytest.approx(cross_entropy_loop(logits, labels), rel=1e-12)

    theta_next = loss.classifier.clone()  # the training-mode update
    assert pce.item() == pytest.approx(cross_entropy(theta_next, z, y).item(), rel=1e-12)
    # theta_next minimises the bound: zero gradient, and the closed-form minimum value.
    theta = theta_next.clone().requires_grad_(True)
    minimum = bound(theta, theta_t, z, y, lam)
    (gradient,) = torch.autograd.grad(minimum, theta)
    assert gradient.abs().max().item() < 1e-12
    probabilities = torch.tensor(p, dtype=torch.float64)
    residual = F.one_hot(y, NUM_CLASSES).to(z.dtype) - probabilities
    descent = (residual.T @ z / n).pow(2).sum() / (2 * lam)  # ||M - C^s||^2 / (2 lambda)
    ce_t = cross_entropy(theta_t, z, y).item()
    assert minimum.item() == pytest.approx(ce_t - descent.item(), rel=1e-12)
    assert pce.item() <= minimum.item() + 1e-12 and minimum.item() < ce_t


def test_pce_at_zero_classifier_is_spce_of_scaled_features():
    z, y = batch(11)  # all NUM_CLASSES classes present
    lam = concavity_lambda(z).item()
    expected = SPCELoss()(z / math.sqrt(lam), y)
    pce = PCELoss(NUM_CLASSES, DIM).double()(z, y)
    assert pce.item() == pytest.approx(expected.item(), rel=1e-12)


def test_pce_updates_its_classifier_only_in_training_mode():
    z, y = batch(12)
    loss = PCELoss(NUM_CLASSES, DIM).double().eval()
    loss(z, y)
    assert not loss.classifier.any()
    loss.train()(z, y)
    assert loss.classifier.any()


# ---------------------------------------------------------------- Lemma 1's identity


def test_contrastive_tightness_is_2_n_k_times_center_tightness():
    z, y = batch(13, dim=3)
    rows, labels = z.tolist(), y.tolist()
    per_sample_center = 0.0
    for k in set(labels):
        members = [r for r, label in zip(rows, labels) if label == k]
        center = [sum(column) / len(members) for column in zip(*members)]
        center_tightness = sum(squared_distance(r, center) for r in members)
        pairwise = sum(squared_distance(a, b) for a in members for b in members)
        assert pairwise == pytest.approx(2 * len(members) * center_tightness, rel=1e-12)
        per_sample_center += pairwise / (2 * len(members))
    tightness = mi_terms(z, y, normalize=False)[TIGHTNESS]
    assert tightness == pytest.approx(per_sample_center / len(rows), rel=1e-12)


# ---------------------------------------------------------------- contracts over every own loss

LOSSES = {
    "center": lambda: CenterLoss(NUM_CLASSES, DIM).double(),
    "snca": SNCALoss,
    "spce": SPCELoss,
    "pce": lambda: PCELoss(NUM_CLASSES, DIM).double(),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradients_are_finite_and_non_zero(name):
    loss = LOSSES[name]()
    z, y = batch(14)
    z.requires_grad_(True)
    loss(z, y).backward()
    for tensor in [z, *loss.parameters()]:
        assert torch.isfinite(tensor.grad).all() and tensor.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["snca", "spce", "pce"])
def test_float64_in_float64_out(name):
    z, y = batch(15)
    assert LOSSES[name]()(z, y).dtype == torch.float64
