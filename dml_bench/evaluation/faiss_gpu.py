"""Whether FAISS's GPU path runs on this machine: asked once per process, in a child process.

A GPU build of FAISS that cannot run here (its kernels do not cover the GPU's compute capability,
or its CUDA runtime needs a newer driver) does not raise an exception: FAISS's CUDA assertions
print one line and abort() the process. So before the first search that would use the GPU, a
child Python runs a tiny GPU search; if it fails, FAISS searches use the torch backend (and NMI's
k-means the CPU) for the rest of the process, after one warning line.
"""

import functools
import logging
import subprocess
import sys
from importlib import metadata

import faiss

log = logging.getLogger(__name__)

USABLE, ABSENT, BROKEN = "usable", "absent", "broken"
NO_GPU_EXIT = 3  # the probe's exit status when FAISS sees no GPU
PROBE_TIMEOUT_S = 300
# A GPU flat search of 8 orthogonal vectors must return each one itself.
PROBE = f"""
import faiss, numpy as np
if faiss.get_num_gpus() == 0:
    raise SystemExit({NO_GPU_EXIT})
x = np.eye(8, dtype="float32")
index = faiss.index_cpu_to_all_gpus(faiss.IndexFlatIP(8))
index.add(x)
found = index.search(x, 1)[1][:, 0]
assert (found == np.arange(8)).all(), f"GPU search returned {{found}}"
"""


@functools.cache
def gpu_state() -> str:
    """``USABLE``: FAISS searches on the GPU; ``ABSENT``: a CPU build, or a GPU build that sees
    no GPU (FAISS searches on the CPU); ``BROKEN``: a GPU build whose GPU search fails here."""
    if not hasattr(faiss, "StandardGpuResources"):  # a CPU build
        return ABSENT
    try:
        child = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                               timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        reason = f"a tiny GPU search gave no answer within {PROBE_TIMEOUT_S} s"
    else:
        if child.returncode in (0, NO_GPU_EXIT):
            return USABLE if child.returncode == 0 else ABSENT
        lines = child.stderr.strip().splitlines()
        reason = lines[-1][:300] if lines else f"a tiny GPU search exited with status {child.returncode}"
    log.warning("FAISS's GPU search cannot run on this machine (%s); searching with the torch backend instead "
                "(docs/development.md names the FAISS build for current GPUs).", reason)
    return BROKEN


def faiss_builds() -> list[str]:
    """The installed distributions that provide the module ``faiss``, with their versions
    (exactly one in a healthy environment)."""
    names = metadata.packages_distributions().get("faiss", [])
    return [f"{name} {metadata.version(name)}" for name in sorted(set(names))]
