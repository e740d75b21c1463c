"""The FAISS part of scripts/bench_gpu.py: which build is installed, which kernels its library holds,
how they reach this GPU (native code, or PTX the driver compiles), and whether its GPU index gives
the exact answer. Each function returns rows of (part, setting, result).

CUDA kernels sit in a library as fat binaries: each entry is machine code (SASS) for one
architecture sm_XY, or PTX for a virtual architecture compute_XY. SASS for sm_XY runs on GPUs of
compute capability X.Z with Z >= Y; PTX for compute_XY is compiled by the driver, at first use,
for any GPU of capability >= X.Y (how the faiss-gpu 1.15 wheel, SASS up to sm_90, runs on
Blackwell). ``fatbin_architectures`` reads the entries' headers.
"""

import struct
import time
from pathlib import Path

import numpy as np

from dml_bench.evaluation import faiss_gpu

# What backend=faiss did, by ``faiss_gpu.gpu_state``.
FAISS_GPU_PATH = {
    faiss_gpu.USABLE: "GPU path ran (flat index on the GPU)",
    faiss_gpu.ABSENT: "GPU path not taken: a CPU build, or no GPU seen by FAISS",
    faiss_gpu.BROKEN: "GPU path failed here: searched with the torch backend (see the warning)",
}
FATBIN_MAGIC = struct.pack("<I", 0xBA55ED50)
SASS, PTX = 2, 1  # the entry kinds of a fat binary


def fatbin_architectures(data: bytes) -> tuple[set[int], set[int]]:
    """(SASS architectures, PTX architectures), as 10 * major + minor, of every fat binary in
    ``data`` (a shared library's bytes)."""
    sass, ptx = set(), set()
    start = data.find(FATBIN_MAGIC)
    while start >= 0:
        _, header_size, size = struct.unpack_from("<HHQ", data, start + 4)
        position, end = start + header_size, start + header_size + size
        while position + 32 <= min(end, len(data)):
            kind, _, entry_header, entry_size = struct.unpack_from("<HHIQ", data, position)
            arch = struct.unpack_from("<I", data, position + 28)[0]
            {SASS: sass, PTX: ptx}.get(kind, set()).add(arch)
            if entry_header == 0:
                break
            position += entry_header + entry_size
        start = data.find(FATBIN_MAGIC, max(end, start + 4))
    return sass, ptx


def kernel_source(capability: tuple[int, int], sass: set[int], ptx: set[int]) -> str:
    """How kernels of these architectures reach a GPU of compute capability (major, minor)."""
    major, minor = capability
    native = [arch for arch in sass if arch // 10 == major and arch % 10 <= minor]
    if native:
        return f"native sm_{max(native)} code"
    compiled = [arch for arch in ptx if arch <= 10 * major + minor]
    if compiled:
        return f"compute_{max(compiled)} PTX compiled by the driver at first use (cached in ~/.nv/ComputeCache)"
    return "none: no kernel of this library runs on this GPU"


def faiss_library() -> Path | None:
    import faiss

    found = sorted(Path(faiss.__file__).parent.glob("libfaiss*.so*"))
    return found[0] if found else None


def build_rows(capability: tuple[int, int] | None) -> list[list]:
    """The installed build, its version, and the kernels of its library for this GPU."""
    import faiss

    builds = ", ".join(faiss_gpu.faiss_builds()) or "none"
    gpu_build = hasattr(faiss, "StandardGpuResources")
    rows = [["FAISS", "build", f"{builds} (module faiss {faiss.__version__}, "
             f"{'GPU' if gpu_build else 'CPU'} build)"]]
    if not gpu_build:
        return rows
    library = faiss_library()
    sass, ptx = fatbin_architectures(library.read_bytes()) if library else (set(), set())
    listed = ", ".join([f"sm_{a}" for a in sorted(sass)] + [f"compute_{a} PTX" for a in sorted(ptx)])
    rows.append(["FAISS", f"kernels in {library.name if library else 'its library'}", listed or "none found"])
    if capability is not None:
        rows.append(["FAISS", f"kernels for this GPU (compute capability {capability[0]}.{capability[1]})",
                     kernel_source(capability, sass, ptx)])
    return rows


def gpu_index_rows(count: int = 20_000, dim: int = 128, queries: int = 1_000, k: int = 100) -> list[list]:
    """A GPU flat inner-product search against a float64 brute force; the first call (with any
    PTX compilation) and the second timed apart. Run only after ``faiss_gpu.gpu_state()`` says
    the GPU path works: where it cannot, FAISS aborts the process."""
    import faiss

    setting = f"GPU flat index, {count:,} x {dim}, {queries:,} queries, k={k}"
    state = faiss_gpu.gpu_state()
    if state != faiss_gpu.USABLE:
        return [["FAISS", setting, f"not run: {FAISS_GPU_PATH[state]}"]]
    rng = np.random.default_rng(0)
    base = rng.standard_normal((count, dim)).astype(np.float32)
    query = rng.standard_normal((queries, dim)).astype(np.float32)
    index = faiss.index_cpu_to_all_gpus(faiss.IndexFlatIP(dim))
    index.add(base)
    times = []
    for _ in range(2):
        start = time.perf_counter()
        scores, ids = index.search(query, k)
        times.append(time.perf_counter() - start)
    exact = query.astype(np.float64) @ base.astype(np.float64).T
    top = -np.sort(-exact, axis=1)[:, :k]
    same_ids = np.mean([len(set(a) & set(b)) / k for a, b in zip(ids, np.argsort(-exact, axis=1)[:, :k])])
    agrees = np.allclose(scores, top, rtol=0, atol=1e-3) and same_ids > 0.999
    verdict = "exact" if agrees else f"WRONG: {same_ids:.4f} of the neighbours found"
    return [["FAISS", setting, f"{verdict}; {times[0]:.2f} s first call, {times[1]:.3f} s second"]]
