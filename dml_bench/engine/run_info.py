"""run_info.json: what a run ran on (commit, packages, device, command), for reproducing it."""

import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import torch

PACKAGES = ("torch", "torchvision", "pytorch-metric-learning", "hydra-core", "omegaconf",
            "timm", "faiss-cpu", "faiss-gpu", "faiss-cuda", "numpy", "tensorboard", "dml_bench")


def git_commit() -> str | None:
    """The commit of the dml_bench checkout, with ``-dirty`` when it has local changes."""
    repo = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                                text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)} x{torch.cuda.device_count()}"
    return f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def run_info(device: torch.device, seed: int, world_size: int = 1, deterministic: bool | None = None,
             tf32: bool | None = None) -> dict:
    return {
        "git_commit": git_commit(),
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "device": device_description(device),
        "world_size": world_size,
        "seed": seed,
        "deterministic": deterministic,
        "tf32": tf32,
        "host": socket.gethostname(),
        "command": sys.argv,
    }
