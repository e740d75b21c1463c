"""scripts/bench_gpu.py's FAISS check: the fat-binary headers read from crafted bytes, the rule by
which a kernel reaches a GPU, and the GPU-index verdict (its arithmetic run on the CPU index)."""

import struct

import faiss
import pytest

from dml_bench.bench import faiss_check
from dml_bench.evaluation import faiss_gpu


def fatbin(entries, junk=b"\x00" * 7) -> bytes:
    """A fat binary as nvcc lays it out: a 16-byte header (magic, version, header size, size of
    the entries), then per entry a 64-byte header (kind, version, header size, payload size, ...,
    architecture at byte 28) and its payload."""
    body = b""
    for kind, arch, payload in entries:
        header = struct.pack("<HHIQ", kind, 0x101, 64, len(payload)) + b"\x00" * 12 + struct.pack("<I", arch)
        body += header + b"\x00" * (64 - len(header)) + payload
    return junk + faiss_check.FATBIN_MAGIC + struct.pack("<HHQ", 1, 16, len(body)) + body + junk


def test_fatbin_architectures_reads_every_entry_of_every_fat_binary():
    library = (fatbin([(faiss_check.SASS, 80, b"cubin" * 3), (faiss_check.PTX, 90, b".target sm_90")])
               + fatbin([(faiss_check.SASS, 70, b"x"), (faiss_check.SASS, 90, b"y" * 40)]))
    assert faiss_check.fatbin_architectures(library) == ({70, 80, 90}, {90})
    assert faiss_check.fatbin_architectures(b"no cuda here") == (set(), set())


# The faiss-gpu 1.15.1 wheel's libfaiss.so, as fatbin_architectures reads it: SASS sm_70 to sm_90, PTX compute_90.
WHEEL = ({70, 75, 80, 86, 89, 90}, {90})


@pytest.mark.parametrize(("capability", "source"), [
    ((9, 0), "native sm_90"),        # H100, H200
    ((8, 7), "native sm_86"),        # same major, lower minor: binary compatible
    ((7, 5), "native sm_75"),
    ((10, 0), "compute_90 PTX compiled by the driver"),   # B200
    ((12, 0), "compute_90 PTX compiled by the driver"),   # RTX 50
    ((6, 1), "none"),
])
def test_kernel_source_follows_cudas_compatibility_rules(capability, source):
    assert faiss_check.kernel_source(capability, *WHEEL).startswith(source)


def test_build_rows_name_this_environments_build():
    [row] = faiss_check.build_rows((9, 0))  # faiss-cpu here: no kernels to list
    assert row[2].startswith(", ".join(faiss_gpu.faiss_builds())) and "CPU build" in row[2]
    assert faiss.__version__ in row[2]


@pytest.fixture
def usable_gpu_path(monkeypatch):
    """The GPU path reported usable, and the 'GPU' index the CPU's own (what is checked is the
    verdict's arithmetic)."""
    monkeypatch.setattr(faiss_gpu, "gpu_state", lambda: faiss_gpu.USABLE)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", lambda index: index, raising=False)


def test_a_correct_index_is_exact(usable_gpu_path):
    [row] = faiss_check.gpu_index_rows(count=500, dim=8, queries=20, k=10)
    assert row[2].startswith("exact; ") and "first call" in row[2]


def test_a_wrong_index_is_reported(usable_gpu_path, monkeypatch):
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", lambda index: faiss.IndexFlatL2(index.d))
    [row] = faiss_check.gpu_index_rows(count=500, dim=8, queries=20, k=10)
    assert row[2].startswith("WRONG: ")


def test_without_the_gpu_path_the_search_is_not_run():
    [row] = faiss_check.gpu_index_rows()
    assert row[2] == f"not run: {faiss_check.FAISS_GPU_PATH[faiss_gpu.gpu_state()]}"
