"""Where and in what precision a run computes: the device, autocast, TF32, determinism."""

import contextlib
import logging
import os

import torch

from dml_bench.runtime.errors import UserError

log = logging.getLogger(__name__)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"trainer.device={device} but CUDA is not available here; use trainer.device=cpu or auto.")
    return torch.device(device)


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """auto: bf16 on CUDA, none on CPU. Autocast runs on CUDA only (``autocast``), so elsewhere
    bf16 and fp16 are ignored, with one warning: a user who asked for them should know."""
    choices = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if amp not in choices:
        raise UserError(f"trainer.amp={amp} is not one of auto, {', '.join(choices)}.")
    if device.type != "cuda" and choices[amp] is not None:
        log.warning("trainer.amp=%s is ignored on %s (autocast runs on CUDA only): this run computes in float32.",
                    amp, device.type)
        return None
    return choices[amp]


def autocast(device: torch.device, amp_dtype: torch.dtype | None):
    """bf16/fp16 autocast on CUDA when an AMP dtype is set; a no-op otherwise."""
    if amp_dtype is None or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=amp_dtype)


def set_tf32(allowed: bool) -> None:
    """``trainer.tf32``: whether float32 matrix products and cuDNN convolutions may run on TF32
    tensor cores (Ampere and newer GPUs; 10 mantissa bits in the products). PyTorch's default is
    TF32 for convolutions and IEEE fp32 for matmuls; off, both compute in IEEE fp32, as the paper's
    recipe did on GPUs without TF32. Set through the ``fp32_precision`` flags that this PyTorch
    recommends (its older ``allow_tf32`` flags cannot be mixed with them)."""
    precision = "tf32" if allowed else "ieee"
    torch.backends.cuda.matmul.fp32_precision = precision
    torch.backends.cudnn.conv.fp32_precision = precision


def set_deterministic(deterministic, device: torch.device) -> bool:
    """``auto``: on for CPU, off for CUDA. CPU runs repeat exactly either way: torch's CPU kernels
    give the same results for the same number of threads. On CUDA, deterministic mode makes torch
    pick deterministic kernels (with a warning naming any op that has none) and sets the cuBLAS
    workspace they need; off, cuDNN benchmarks and picks its fastest, non-deterministic kernels."""
    if deterministic == "auto":
        deterministic = device.type != "cuda"
    if device.type == "cuda":
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before cuBLAS starts
            torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = bool(deterministic)
        torch.backends.cudnn.benchmark = not deterministic
    return bool(deterministic)
