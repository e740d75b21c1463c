"""mi_terms against plain loops, and the directions its terms must move in."""

import math

import pytest
import torch

from dml_bench.evaluation import mi_terms as module
from dml_bench.evaluation.mi_terms import ENTROPY, MI_PROXY, TIGHTNESS, mi_terms

LABELS = [0, 1, 0, 2, 1, 0, 2, 3]  # class 3 has a single sample


def points(seed: int, n: int = len(LABELS), dim: int = 3) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def loop_terms(rows, labels, normalize: bool, eps: float = 1e-12):
    if normalize:
        rows = [[x / math.sqrt(sum(v * v for v in r)) for x in r] for r in rows]
    n, d = len(rows), len(rows[0])
    tightness = 0.0
    for k in set(labels):
        members = [r for r, label in zip(rows, labels) if label == k]
        center = [sum(column) / len(members) for column in zip(*members)]
        tightness += sum(sum((a - c) ** 2 for a, c in zip(r, center)) for r in members)
    log_sum = sum(
        math.log(sum((a - b) ** 2 for a, b in zip(rows[i], rows[j])) + eps)
        for i in range(n)
        for j in range(n)
        if i != j
    )
    return tightness / n, d * log_sum / (n * (n - 1))


@pytest.mark.parametrize("normalize", [True, False])
def test_terms_match_loop_across_blocks(normalize, monkeypatch):
    monkeypatch.setattr(module, "BLOCK_ROWS", 3)  # several blocks, the last one short
    z = points(0)
    tightness, entropy = loop_terms(z.tolist(), LABELS, normalize)
    terms = mi_terms(z, LABELS, normalize=normalize)
    assert terms[TIGHTNESS] == pytest.approx(tightness, rel=1e-10)
    assert terms[ENTROPY] == pytest.approx(entropy, rel=1e-10)
    assert terms[MI_PROXY] == pytest.approx(entropy - tightness, rel=1e-10)


def test_numpy_and_torch_inputs_agree():
    z = points(1)
    from_torch = mi_terms(z.float(), torch.tensor(LABELS))
    from_numpy = mi_terms(z.float().numpy(), torch.tensor(LABELS).numpy())
    assert from_numpy == pytest.approx(from_torch, rel=1e-12)


def test_tighter_clusters_give_lower_tightness():
    centers = 4 * points(2, n=4)
    noise = points(3)
    labels = torch.tensor(LABELS)
    spreads = [mi_terms(centers[labels] + s * noise, labels)[TIGHTNESS] for s in (0.05, 0.3, 1.0)]
    assert spreads[0] < spreads[1] < spreads[2]


def test_spreading_points_raises_the_entropy():
    z = points(4)
    # Raw features: doubling all distances adds exactly d * log 4.
    raw, doubled = (mi_terms(s * z, LABELS, normalize=False)[ENTROPY] for s in (1.0, 2.0))
    assert doubled - raw == pytest.approx(3 * math.log(4), rel=1e-10)
    # Normalised features: a small cap of the sphere against the whole sphere.
    cap = z + torch.tensor([10.0, 0.0, 0.0], dtype=torch.float64)
    assert mi_terms(cap, LABELS)[ENTROPY] < mi_terms(z, LABELS)[ENTROPY]


def test_duplicates_stay_finite():
    z = points(5)
    z[1] = z[0]
    assert all(math.isfinite(v) for v in mi_terms(z, LABELS).values())


def test_subsample_is_seeded_and_only_used_for_the_entropy():
    z, labels = points(6, n=40), torch.arange(40) % 5
    full = mi_terms(z, labels)
    first, again, other_seed = (mi_terms(z, labels, max_points=12, seed=s) for s in (0, 0, 1))
    assert first == again and first[ENTROPY] != other_seed[ENTROPY]
    assert first[TIGHTNESS] == full[TIGHTNESS] and first[ENTROPY] != full[ENTROPY]
    assert mi_terms(z, labels, max_points=40) == full
