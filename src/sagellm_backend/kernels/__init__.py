"""Kernels: the registry providers resolve names through, and the engine's kernels.

* :mod:`.registry`: :class:`KernelRegistry`, :data:`global_kernels`, :func:`register_kernel`,
  :class:`ProviderKernels` (resolution order and priorities).
* :mod:`.base`: :class:`Kernel`, the callable kernel object ``get_kernel`` returns.
* :mod:`.engine`: :func:`register_engine_kernels` and :data:`ENGINE_KERNEL_NAMES`.
* :mod:`.fused_ops`: :class:`FusedSiLUMulKernel`, :class:`FusedAddRMSNormKernel`,
  :class:`FusedQKVProjectionKernel`.
* Implementations, imported on first use: :mod:`.torch_ops`, :mod:`.numpy_ops`, :mod:`.triton_ops`.

Importing this package imports neither torch nor Triton.
"""

from __future__ import annotations

from .base import FunctionKernel, Kernel
from .engine import ENGINE_KERNEL_NAMES, register_engine_kernels
from .fused_ops import FusedAddRMSNormKernel, FusedQKVProjectionKernel, FusedSiLUMulKernel
from .registry import KernelEntry, KernelRegistry, ProviderKernels, global_kernels, register_kernel

__all__ = [
    "ENGINE_KERNEL_NAMES",
    "FunctionKernel",
    "FusedAddRMSNormKernel",
    "FusedQKVProjectionKernel",
    "FusedSiLUMulKernel",
    "Kernel",
    "KernelEntry",
    "KernelRegistry",
    "ProviderKernels",
    "global_kernels",
    "register_engine_kernels",
    "register_kernel",
]
