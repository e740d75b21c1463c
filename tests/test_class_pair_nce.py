"""loss=class_pair_nce (Ermolov et al.'s spherical pairwise cross-entropy) against a float64 loop
written from the official code's formula, view pair by view pair."""

import math

import pytest
import torch
import torch.nn.functional as F

from dml_bench.losses import ClassPairNCELoss


def views_of(embeddings, labels):
    """view a: the a-th image of each class in batch order, classes in ascending label order."""
    classes = sorted(set(labels))
    members = {c: [row for row, label in zip(embeddings, labels) if label == c] for c in classes}
    m = len(members[classes[0]])
    return [[members[c][a] for c in classes] for a in range(m)]


def reference(embeddings, labels, temperature):
    """sum over views a != b of the mean over classes c of -log softmax, over [b_k for all k] and
    [a_k for k != c], at b_c; plain Python floats."""
    views = views_of(embeddings.tolist(), labels.tolist())
    dot = lambda u, v: sum(x * y for x, y in zip(u, v)) / temperature  # noqa: E731
    total = 0.0
    for a, view_a in enumerate(views):
        for b, view_b in enumerate(views):
            if a == b:
                continue
            pair = 0.0
            for c, anchor in enumerate(view_a):
                logits = [dot(anchor, other) for other in view_b]
                logits += [dot(anchor, other) for k, other in enumerate(view_a) if k != c]
                top = max(logits)
                pair += top + math.log(sum(math.exp(v - top) for v in logits)) - dot(anchor, view_b[c])
            total += pair / len(view_a)
    return total


def batch(seed, classes=5, m=3, dim=6):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat(m)[torch.randperm(classes * m, generator=generator)] * 7 + 3
    embeddings = F.normalize(torch.randn(classes * m, dim, generator=generator, dtype=torch.float64), dim=1)
    return embeddings, labels


@pytest.mark.parametrize(("m", "temperature"), [(2, 0.1), (3, 0.1), (4, 0.5)])
def test_matches_the_float64_loop(m, temperature):
    embeddings, labels = batch(m, m=m)
    value = ClassPairNCELoss(temperature)(embeddings, labels)
    assert value.dtype == torch.float64
    assert value.item() == pytest.approx(reference(embeddings, labels, temperature), rel=1e-12)


def test_two_classes_two_images_by_hand():
    """Views a = (e1, e2), b = (e1, e3) in the plane: for a -> b the class-0 anchor e1 sees
    b: (e1.e1, e1.e3) = (1, 0) and a: e1.e2 = 0; class 1's anchor e2 sees (0, 0) and 0."""
    e1, e2, e3 = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    embeddings = torch.stack([e1, e2, e1, e3])
    labels = torch.tensor([0, 1, 0, 1])
    t = 0.5
    a_to_b = (-math.log(math.exp(2) / (math.exp(2) + 2)) - math.log(1 / 3)) / 2
    b_to_a = a_to_b  # the same by symmetry of these vectors: e1 sees (1, 0, 0), e3 sees (0, 0, 0)
    assert ClassPairNCELoss(t)(embeddings, labels).item() == pytest.approx(a_to_b + b_to_a, rel=1e-12)


def test_the_order_of_the_classes_in_the_batch_does_not_matter():
    embeddings, labels = batch(7, classes=4, m=3)
    loss = ClassPairNCELoss(0.1)
    order = torch.argsort(labels, stable=True)  # the classes grouped: each class keeps its images' order
    assert loss(embeddings[order], labels[order]).item() == pytest.approx(loss(embeddings, labels).item(), rel=1e-12)


def test_gradients_are_finite_and_reach_every_embedding():
    embeddings, labels = batch(8)
    embeddings.requires_grad_(True)
    ClassPairNCELoss(0.1)(embeddings, labels).backward()
    assert torch.isfinite(embeddings.grad).all() and (embeddings.grad.abs().sum(dim=1) > 0).all()


@pytest.mark.parametrize("labels", [[0, 0, 1, 1, 1], [0, 1, 2, 3]])
def test_classes_of_unequal_or_single_images_are_refused(labels):
    with pytest.raises(ValueError, match="sampler=m_per_class"):
        ClassPairNCELoss()(torch.randn(len(labels), 4), torch.tensor(labels))


def test_unnormalised_embeddings_give_the_loss_of_their_directions():
    """The loss normalises: embeddings scaled by 1 to 1000 per row give the loss of the unit
    vectors, so a model without model.l2_normalize does not diverge through growing norms."""
    embeddings, labels = batch(9)
    scales = torch.logspace(0, 3, len(labels), dtype=torch.float64)[:, None]
    assert ClassPairNCELoss(0.1)(embeddings * scales, labels).item() == pytest.approx(
        reference(embeddings, labels, 0.1), rel=1e-12)
