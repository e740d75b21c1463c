"""The benchmark scripts run end to end on tiny settings, and their arithmetic is right."""

import pytest
import torch

from dml_bench.bench.timing import interleaved_rates, ratio_columns
from dml_bench.data.loaders import available_cpus, default_num_workers, make_loader
from scripts import bench_gpu, bench_train
from scripts.bench_data import bench_size


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


def test_bench_train_prints_both_tables(capsys):
    assert bench_train.main(["--steps", "1", "--rounds", "1", "--batch-size", "16", "--image-size", "16"]) == 0
    out = capsys.readouterr().out
    for name in ("bare PyTorch loop", "dml_bench Trainer", "cross-entropy", "triplet + semihard miner"):
        assert name in out


def test_bench_gpu_explains_itself_without_a_gpu(capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert bench_gpu.main([]) == 2
    assert "measures a CUDA GPU and none is visible here" in capsys.readouterr().err


def test_bench_gpu_parts_run_on_tiny_settings(tmp_path):
    cpu = torch.device("cpu")
    rows = bench_gpu.training_rows(1, 1, cpu, arch="small", image_size=16, batch_size=16, compile_model=False)
    assert len(rows) == 7 and all(row[2].endswith("images/s") for row in rows)
    rows = bench_gpu.data_rows(tmp_path, workers=1, counts=(((64, 48), 4),))
    assert [row[1] for row in rows] == ["plain", "ours"]
    rows = bench_gpu.evaluation_rows(cpu, images=60, classes=12, dim=4)
    assert [row[1] for row in rows] == ["backend=auto", "backend=faiss", "backend=torch"]


def test_loader_defaults_follow_the_cpu_count():
    assert default_num_workers() == max(0, min(16, available_cpus() - 1))
    dataset = torch.utils.data.TensorDataset(torch.arange(8))
    assert make_loader(dataset, 4, num_workers=1).prefetch_factor == 4
    loader = make_loader(dataset, 4, num_workers=2)
    assert loader.prefetch_factor == 2 and loader.persistent_workers
    assert make_loader(dataset, 4, num_workers=0).prefetch_factor is None
