"""Samplers: deterministic under a seed, m-per-class batches, DDP shards that add up, resumable."""

import collections
import math

import pytest

from dml_bench.data import MPerClassSampler, UniformSampler
from dml_bench.data.samplers import TooFewSamples
from dml_bench.runtime.errors import UserError

LABELS = [c for c in range(20) for _ in range(3 + c % 4)]


def indices(sampler) -> list[int]:
    return [index for index, _ in sampler]


@pytest.mark.parametrize("make", [lambda **kw: UniformSampler(LABELS, 16, **kw),
                                  lambda **kw: MPerClassSampler(LABELS, 16, m=4, **kw)])
def test_same_seed_same_order_new_epoch_new_order(make):
    a, b, c = make(seed=3), make(seed=3), make(seed=4)
    assert list(a) == list(b) != list(c)
    b.set_epoch(1)
    assert list(a) != list(b)
    assert len(list(a)) == len(a) == (len(LABELS) // 16) * 16


def test_uniform_is_without_replacement():
    order = indices(UniformSampler(LABELS, 16, seed=0))
    assert len(set(order)) == len(order)


def test_m_per_class_batches_hold_m_images_of_each_class():
    sampler = MPerClassSampler(LABELS, 16, m=4, seed=0)
    order = indices(sampler)
    for start in range(0, len(order), 16):
        counts = collections.Counter(LABELS[i] for i in order[start:start + 16])
        assert len(counts) == 4 and set(counts.values()) == {4}


@pytest.mark.parametrize("m", [3, 4])
def test_m_per_class_per_epoch_classes_visits_every_class_once(m):
    """Ermolov et al.'s epoch: 20 classes, batches of 3 classes x m images: 6 batches, 2 classes
    left out, a different two each epoch; each class's images distinct where it has m of them."""
    sampler = MPerClassSampler(LABELS, 3 * m, m=m, seed=0, per_epoch="classes")
    left_out = set()
    for epoch in range(4):
        sampler.set_epoch(epoch)
        order = indices(sampler)
        assert len(order) == len(sampler) == 6 * 3 * m
        runs = [order[i:i + m] for i in range(0, len(order), m)]  # a class's m images side by side
        classes = [LABELS[run[0]] for run in runs]
        assert all({LABELS[i] for i in run} == {c} for run, c in zip(runs, classes))
        assert len(set(classes)) == 18 and all(len(set(run)) == m for run in runs if LABELS.count(LABELS[run[0]]) >= m)
        left_out.add(frozenset(range(20)) - frozenset(classes))
    assert len(left_out) > 1


def test_an_unknown_per_epoch_names_the_choices():
    with pytest.raises(UserError, match="sampler.per_epoch=batches must be one of images, classes"):
        MPerClassSampler(LABELS, 16, m=4, per_epoch="batches")


@pytest.mark.parametrize("cls", [UniformSampler, MPerClassSampler])
def test_ranks_split_each_global_batch(cls):
    single = list(cls(LABELS, 16, seed=0))
    shards = [list(cls(LABELS, 16, seed=0, num_replicas=2, rank=r)) for r in (0, 1)]
    rebuilt = []
    for b in range(len(single) // 16):
        rebuilt += shards[0][b * 8:(b + 1) * 8] + shards[1][b * 8:(b + 1) * 8]
    assert rebuilt == single


@pytest.mark.parametrize("cls", [UniformSampler, MPerClassSampler])
def test_every_position_of_an_epoch_gets_its_own_seed_shared_by_the_ranks(cls):
    single = list(cls(LABELS, 16, seed=0))
    seeds = [seed for _, seed in single]
    assert len(set(seeds)) == len(seeds)
    shards = [list(cls(LABELS, 16, seed=0, num_replicas=2, rank=r)) for r in (0, 1)]
    assert sorted(shards[0] + shards[1]) == sorted(single)


@pytest.mark.parametrize("cls", [UniformSampler, MPerClassSampler])
@pytest.mark.parametrize("num_replicas", [1, 2])
def test_start_batch_skips_exactly_the_trained_batches(cls, num_replicas):
    full, resumed = (cls(LABELS, 16, seed=5, num_replicas=num_replicas, rank=num_replicas - 1) for _ in range(2))
    full.set_epoch(3)
    resumed.set_epoch(3, start_batch=2)
    per_rank = 16 // num_replicas
    assert list(resumed) == list(full)[2 * per_rank:]
    assert len(resumed) == len(full) - 2 * per_rank


@pytest.mark.parametrize(("make", "step"), [
    (lambda batch, ranks: UniformSampler(LABELS[:30], batch, num_replicas=ranks), 1),
    (lambda batch, ranks: MPerClassSampler(LABELS[:30], batch, m=4, num_replicas=ranks), 4),
])
@pytest.mark.parametrize("ranks", [1, 2])
def test_too_few_samples_name_the_largest_batch_that_fits(make, step, ranks):
    step = step * ranks // math.gcd(step, ranks)
    with pytest.raises(TooFewSamples) as error:
        make(64, ranks)
    largest = error.value.largest
    assert largest % step == 0 and largest > 0
    make(largest, ranks)  # fits
    with pytest.raises(TooFewSamples):
        make(largest + step, ranks)  # the next size that would divide as needed does not


def test_a_batch_that_is_no_multiple_of_m_names_both_keys():
    with pytest.raises(UserError, match=r"^trainer\.batch_size=30 must be a multiple of sampler\.m=4 .* "
                                        r"e\.g\. trainer\.batch_size=28\.$"):
        MPerClassSampler(LABELS, 30, m=4)
