"""Checkpoints that survive a crash: written to a temporary file, then renamed over."""

import os
import random
from pathlib import Path

import numpy as np
import torch


def rng_states(device: torch.device) -> dict:
    """Python's, numpy's and torch's generators, and that of the CUDA ``device`` the process uses
    (one per process: each DDP rank restores it on its own GPU)."""
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def restore_rng_states(states: dict, device: torch.device) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and device.type == "cuda":
        torch.cuda.set_rng_state(states["cuda"], device)


def save_checkpoint(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    # Our own files: they hold RNG states and the config as plain Python objects.
    return torch.load(path, map_location=map_location, weights_only=False)
