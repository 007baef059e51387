"""Registering a torch device's kernels: torch's own implementations at low priority, and the
engine kernels. A vendor calls it when its provider is built; torch is imported inside the function."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ..protocol import KernelKind
from .engine import register_engine_kernels
from .registry import global_kernels

__all__ = ["register_torch_kernels"]

_kernels_done: set[str] = set()
_kernels_lock = threading.Lock()


def register_torch_kernels(target: str, *, triton: bool = False) -> None:
    """Register torch's own implementations as low-priority kernels for ``target`` (once), and the
    engine kernels (:mod:`sagellm_backend.kernels.engine`): torch everywhere, fused Triton where
    the vendor runs Triton.

    Args:
        target: Device type.
        triton: Register the fused Triton kernels too.
    """
    with _kernels_lock:
        if target in _kernels_done:
            return
        _kernels_done.add(target)
    import torch
    import torch.nn.functional as F

    builtin: list[tuple[str, Callable[..., Any], KernelKind]] = [
        ("matmul", torch.matmul, KernelKind.MATMUL),
        ("attention", F.scaled_dot_product_attention, KernelKind.ATTENTION),
        ("layernorm", F.layer_norm, KernelKind.LAYERNORM),
        ("softmax", torch.softmax, KernelKind.SOFTMAX),
    ]
    for name, impl, kind in builtin:
        global_kernels.register(name, impl, targets=(target,), priority=-100, kind=kind)
    register_engine_kernels(target, "torch")
    if triton:
        register_engine_kernels(target, "triton")
