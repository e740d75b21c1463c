"""FAISS's GPU path: a GPU build that cannot run on the machine's GPU (it aborts the process, as
FAISS's CUDA assertions do) makes the evaluator search with the torch backend after one warning
line; a GPU build without a GPU searches on the CPU, silently."""

import logging
import os
import re
import subprocess

import faiss
import numpy as np
import pytest
import torch

from dml_bench.evaluation import faiss_gpu, retrieval_metrics
from dml_bench.evaluation.clustering import kmeans_nmi
from tests.helpers.config import ROOT

# What a faiss-gpu-cu12 wheel prints on an H100 before abort(): its kernels stop at sm_89.
ABORTING_PROBE = """
import os, sys
print("Faiss assertion 'err__ == cudaSuccess' failed in void faiss::gpu::runL2Norm(...) at "
      "faiss/gpu/impl/L2Norm.cu:283; details: CUDA error 209 no kernel image is available for execution "
      "on the device", file=sys.stderr, flush=True)
os.abort()
"""


@pytest.fixture
def gpu_build(monkeypatch):
    """This process's FAISS poses as a GPU build that sees a GPU, whose GPU index must not be built;
    the probe's verdict is asked afresh."""
    monkeypatch.setattr(faiss, "StandardGpuResources", object, raising=False)
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)

    def gpu_index(index):
        raise AssertionError("a FAISS GPU index was built")

    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", gpu_index)
    faiss_gpu.gpu_state.cache_clear()
    yield
    faiss_gpu.gpu_state.cache_clear()


def points(seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 8, size=90)
    return (rng.standard_normal((8, 6))[labels] + 0.8 * rng.standard_normal((90, 6))).astype(np.float32), labels


@pytest.mark.parametrize("backend", ["faiss", "symmetric", "auto"])
def test_a_gpu_build_that_cannot_run_here_falls_back_to_torch(gpu_build, monkeypatch, caplog, backend):
    monkeypatch.setattr(faiss_gpu, "PROBE", ABORTING_PROBE)
    x, labels = points()
    splits = [(x, labels), (x[:30], labels[:30], x[30:], labels[30:])]
    with caplog.at_level(logging.WARNING, logger=faiss_gpu.__name__):
        fallback = [retrieval_metrics(*split, recall_ks=(1, 4), backend=backend) for split in splits]
        faiss_gpu.gpu_state.cache_clear()
        fallback_nmi = kmeans_nmi(torch.from_numpy(x), torch.from_numpy(labels))
    assert fallback == [retrieval_metrics(*split, recall_ks=(1, 4), backend="torch") for split in splits]
    monkeypatch.undo()  # back to this machine's FAISS, as a CPU build
    assert fallback_nmi == kmeans_nmi(torch.from_numpy(x), torch.from_numpy(labels))
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 2  # once per probe: one for the searches, one after the cache was cleared
    assert "\n" not in warnings[0]
    assert "cannot run on this machine (Faiss assertion" in warnings[0]
    assert "no kernel image is available for execution on the device); searching with the torch" in warnings[0]


def test_a_gpu_build_without_a_gpu_searches_on_the_cpu_silently(gpu_build, monkeypatch, caplog):
    """The real probe in a child process: this machine's FAISS sees no GPU, so it exits with
    NO_GPU_EXIT and FAISS searches on the CPU, without a warning."""
    x, labels = points(1)
    with caplog.at_level(logging.WARNING):
        metrics = retrieval_metrics(x[:30], labels[:30], x[30:], labels[30:], backend="faiss")
    assert faiss_gpu.gpu_state() == faiss_gpu.ABSENT
    assert caplog.records == []
    monkeypatch.undo()
    assert metrics == retrieval_metrics(x[:30], labels[:30], x[30:], labels[30:], backend="torch")


def test_a_cpu_build_is_reported_by_its_package_without_a_probe(monkeypatch):
    faiss_gpu.gpu_state.cache_clear()
    monkeypatch.setattr(faiss_gpu, "PROBE", "raise SystemExit(1)")
    assert faiss_gpu.gpu_state() == faiss_gpu.ABSENT
    faiss_gpu.gpu_state.cache_clear()
    [build] = faiss_gpu.faiss_builds()
    assert build.split()[0] in ("faiss-cpu", "faiss-gpu") and faiss.__version__ in build


@pytest.mark.gpu
@pytest.mark.skipif(not (torch.cuda.is_available() and hasattr(faiss, "StandardGpuResources")),
                    reason="needs CUDA and a GPU build of FAISS")
def test_the_gpu_build_runs_on_this_gpu():
    assert faiss_gpu.gpu_state() == faiss_gpu.USABLE


def extra_distribution(extra: str) -> str:
    """The FAISS distribution pyproject.toml's extra ``extra`` installs (its one requirement)."""
    return re.search(rf'^{extra} = \["([A-Za-z0-9_-]+)', (ROOT / "pyproject.toml").read_text(), re.M).group(1)


@pytest.mark.parametrize(("faiss_choice", "other"), [("gpu", "cpu"), ("cpu", "gpu")])
def test_make_setup_removes_every_other_faiss_build_before_installing_its_own(tmp_path, faiss_choice, other):
    """`make setup FAISS=...` as make would run it (-n: printed, not run), in a fresh venv folder."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("MAKE")}  # under `make test` too
    commands = subprocess.run(["make", "-n", "setup", f"FAISS={faiss_choice}", f"VENV={tmp_path / 'venv'}"],
                              cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout.splitlines()
    [uninstall] = [i for i, line in enumerate(commands) if " uninstall " in line]
    [install] = [i for i, line in enumerate(commands) if f'install -q -e ".[dev,{faiss_choice}]"' in line]
    removed = set(commands[uninstall].split(" -y ")[1].split(" >")[0].split())
    assert uninstall < install
    assert extra_distribution(other) in removed and extra_distribution(faiss_choice) not in removed
    assert {"faiss-cuda", "faiss-gpu-cu12", "faiss-gpu-cuvs"} <= removed  # earlier extras, Meta's cuVS variant
