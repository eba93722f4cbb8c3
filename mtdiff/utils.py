"""Small shared helpers: devices, precision, and saving a torch object atomically."""

from __future__ import annotations

from pathlib import Path

import torch

from mtdiff.errors import ConfigError

# Re-exported for mtdiff/config.py and mtdiff/train.py, whose owners move them to mtdiff.io in
# their own change; new code imports these from mtdiff.io.
from mtdiff.io import atomic_open
from mtdiff.io import atomic_path as _atomic_path  # noqa: F401
from mtdiff.io import atomic_write_json, atomic_write_text  # noqa: F401


def atomic_torch_save(obj, path: str | Path) -> None:
    with atomic_open(path, "wb") as fh:
        torch.save(obj, fh)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if available else cpu; asking for CUDA without a GPU is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device={name!r} but no CUDA GPU is visible; use device: auto or cpu")
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"train.device={name!r} but only {torch.cuda.device_count()} GPU(s) are visible")
        return dev
    raise ConfigError(f"train.device={name!r} is not known; accepted: auto, cpu, cuda, cuda:N")


def check_gpu_request(gpus: int, world_size: int) -> None:
    """``train.gpus > 1`` needs that many visible CUDA GPUs and as many torchrun processes;
    raises a ConfigError naming the option otherwise (called before any process group exists)."""
    if gpus <= 1:
        return  # one GPU, or a torchrun launch that chose its own process count (e.g. CPU DDP)
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if visible < gpus:
        raise ConfigError(
            f"train.gpus={gpus} but {visible} CUDA GPU(s) are visible here; set train.gpus to at most "
            f"{max(visible, 1)}, or run on a node with {gpus} GPUs"
        )
    if world_size != gpus:
        raise ConfigError(
            f"train.gpus={gpus} needs {gpus} processes, one per GPU, but this run has {world_size}; launch with "
            f"torchrun --standalone --nproc_per_node={gpus} -m mtdiff.cli train ... (the workflow's train rule does)"
        )


def cpu_has_fast_bf16() -> bool:
    """True where oneDNN has native bf16 kernels (AVX-512 BF16 / AMX). Elsewhere (e.g. AVX2-only
    CPUs) bf16 convolutions fall back to a slow reference path, measured 7x slower than fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> bf16 where it is fast (CUDA with bf16, CPUs with native bf16), else fp32."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_fast_bf16() else "fp32"


def autocast(device: torch.device, precision: str):
    """Autocast context for ``precision`` (fp32 -> disabled; auto -> resolve_precision)."""
    precision = resolve_precision(precision, device)
    if precision == "fp32":
        return torch.autocast(device.type, enabled=False)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    if dtype is torch.float16 and device.type != "cuda":
        raise ConfigError("train.precision=fp16 needs a CUDA device; use bf16 on CPU")
    return torch.autocast(device.type, dtype=dtype)
