"""The benchmark scripts run end to end on tiny settings, and their arithmetic is right."""

import tempfile

import pytest
import torch

from dml_bench.bench import gpu
from dml_bench.bench.data_pipeline import bench_size
from dml_bench.bench.timing import interleaved_rates, ratio_columns
from dml_bench.data import loaders
from dml_bench.data.loaders import make_loader
from dml_bench.evaluation import faiss_gpu
from scripts import bench_gpu, bench_train, bench_verify


def test_candidates_alternate_and_rates_are_images_per_second():
    calls = []
    ticks = iter(range(100))
    candidates = {"a": lambda: calls.append("a") or 10, "b": lambda: calls.append("b") or 30}
    rates = interleaved_rates(candidates, rounds=2, clock=lambda: float(next(ticks)))
    assert calls == ["b", "a", "a", "b", "b", "a"]  # round 0 (warm-up) then alternating order
    assert rates == {"a": [10.0, 10.0], "b": [30.0, 30.0]}  # each call takes one tick


def test_ratio_columns():
    columns = ratio_columns({"base": [100.0, 50.0], "new": [150.0, 200.0]}, {"base": "base", "new": "base"})
    assert columns["base"] == ["100.0", "1.00x", "1.00x"]
    assert columns["new"] == ["200.0", "2.00x", "2.75x"]  # best 200/100; median of 1.5 and 4.0


def test_bench_data_measures_every_pipeline(tmp_path):
    rows = bench_size(tmp_path, (96, 72), images=3, rounds=1)
    assert [row[1] for row in rows] == ["decode only (PIL)", "plain", "ours", "ours, cached",
                                        "plain + CUB jitter", "ours + CUB jitter"]
    assert all(float(row[3]) > 0 and row[4].endswith("x") for row in rows)


@pytest.fixture
def temp_root(tmp_path, monkeypatch):
    """The system's temporary folder, for a test that checks nothing is left in it."""
    root = tmp_path / "temp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def test_bench_train_prints_both_tables_and_leaves_no_files(capsys, temp_root):
    assert bench_train.main(["--steps", "1", "--rounds", "1", "--batch-size", "16", "--image-size", "16"]) == 0
    out = capsys.readouterr().out
    for name in ("bare PyTorch loop", "dml_bench Trainer", "cross-entropy", "triplet + semihard miner"):
        assert name in out
    assert list(temp_root.iterdir()) == []  # the Trainers' TensorBoard files went with their folder


def test_bench_gpu_explains_itself_without_a_gpu(capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert bench_gpu.main([]) == 2
    assert "measures a CUDA GPU and none is visible here" in capsys.readouterr().err


def test_bench_gpu_parts_run_on_tiny_settings(tmp_path, temp_root):
    cpu = torch.device("cpu")
    rows = gpu.training_rows(1, 1, cpu, arch="small", image_size=16, batch_size=16, compile_model=False)
    assert len(rows) == 7 and all(row[2].endswith("images/s") for row in rows)
    assert list(temp_root.iterdir()) == []
    rows = gpu.data_rows(tmp_path, workers=1, counts=(((64, 48), 4),))
    assert [row[1] for row in rows] == ["plain", "ours"]
    rows = gpu.evaluation_rows(cpu, images=60, classes=12, dim=4)
    assert [row[1] for row in rows[:3]] == ["backend=auto", "backend=faiss", "backend=torch"]
    assert rows[3] == ["evaluation, FAISS", *faiss_gpu.faiss_builds(), gpu.FAISS_GPU_PATH[faiss_gpu.gpu_state()]]
    assert rows[3][1].startswith("faiss-") and "GPU path" in rows[3][2] and len(rows) == 4


@pytest.mark.parametrize(("cpus", "local_ranks", "workers"), [(1, 1, 0), (2, 1, 1), (8, 1, 7), (64, 1, 16),
                                                             (64, 4, 15), (8, 4, 1)])
def test_worker_default_leaves_a_core_per_process_and_caps_at_16(monkeypatch, cpus, local_ranks, workers):
    monkeypatch.setattr(loaders, "available_cpus", lambda: cpus)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local_ranks))
    assert loaders.default_num_workers() == workers
    assert loaders.resolve_num_workers("auto") == workers and loaders.resolve_num_workers("3") == 3


@pytest.mark.parametrize(("workers", "prefetch"), [(0, None), (1, 4), (2, 2), (3, 2), (8, 2)])
def test_at_least_four_batches_are_in_flight(workers, prefetch):
    loader = make_loader(torch.utils.data.TensorDataset(torch.arange(8)), 4, num_workers=workers)
    assert loader.prefetch_factor == prefetch and loader.persistent_workers == (workers > 0)


def test_bench_verify_prints_copy_distances_rates_and_pair_times(capsys):
    assert bench_verify.main(["--images", "4", "--rounds", "1", "--pairs", "50", "--copies", "3"]) == 0
    out = capsys.readouterr().out
    for line in ("half size: at most", "JPEG quality 60: at most", "two distinct pictures: at least",
                 "4 synthetic 500x375 JPEGs: 4 images", "exact audit:", "exact + near-duplicates:",
                 "pairs of 50 hashes compared in"):
        assert line in out
