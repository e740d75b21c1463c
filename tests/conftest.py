"""Fixtures and hooks; the helpers they use are in tests/helpers/."""

from pathlib import Path

import pytest
import torch
from threadpoolctl import threadpool_limits

from tests.helpers import session
from tests.helpers.runs import LOSS_SWEEP, fast_overrides, run_train


@pytest.fixture(scope="session", autouse=True)
def session_folder(tmp_path_factory) -> Path:
    """The folder the session's runs write to (tests.helpers.session), under pytest's basetemp;
    datasets left at their default root (``data_dir``: $DML_BENCH_DATA) go to its data/."""
    folder = tmp_path_factory.mktemp("session")
    session.start(folder)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DML_BENCH_DATA", str(folder / "data"))
        yield folder


@pytest.fixture(scope="session", autouse=True)
def one_intra_op_thread():
    """One thread for torch, BLAS and OpenMP (FAISS) in this process too, as in the runs'
    subprocesses (ONE_THREAD_ENV): results computed here and there then agree, and the tests' tiny
    models gain nothing from more threads, which spin-wait for each other on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(threads)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` skip by themselves where CUDA is not available."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (marked gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def loss_sweep(tmp_path_factory) -> Path:
    """A real two-job multirun on the quickstart, one job per loss (0: cross_entropy, 1: contrastive),
    one short epoch each on CPU; returns the sweep folder."""
    sweep = tmp_path_factory.mktemp("loss_sweep")
    run_train("-m", *LOSS_SWEEP, *fast_overrides(), f"hydra.sweep.dir={sweep}")
    return sweep


@pytest.fixture(scope="session")
def quickstart_run(loss_sweep) -> Path:
    """One real one-epoch quickstart run on CPU (job 0 of ``loss_sweep``); returns its run folder."""
    return loss_sweep / "0"
