"""The CUDA provider (NVIDIA GPUs through ``torch.cuda``): device memory, streams and events,
NCCL collectives, CUDA graphs, peer and pinned-host migration, one-launch batched block copies.

Capability rule for ``supported_dtypes`` (by compute capability, cc):
fp32 and fp16 always (cc >= 5.3 on every GPU CUDA 12 supports); int8 from cc 6.1;
bf16 from cc 8.0; fp8 (``float8_e4m3fn``) from cc 8.9; int4 as packed storage (two per byte).
A dtype outside the list is refused on the GPU with the reason
("bf16 needs compute capability >= 8.0; cuda:0 (Tesla T4) has 7.5; use fp16").
"""

from __future__ import annotations

from typing import Any

from ..core.config import Availability
from ..core.provider import Provider
from ..protocol import DType
from .accelerator import accelerator_init
from .base import (
    CUDA_API,
    VendorSpec,
    capability_hint,
    capability_string,
    detect_torch_module,
    device_capability,
    vendor_factory,
)

__all__ = ["CUDA", "CUDABackendProvider", "create_cuda_backend", "detect_cuda"]

_INSTALL = "a CUDA build of torch (pip install 'torch>=2.4' on Linux) and an NVIDIA driver"
_MIN_CC: dict[DType, tuple[int, int]] = {
    DType.FP32: (0, 0),
    DType.FP16: (5, 3),
    DType.INT8: (6, 1),
    DType.BF16: (8, 0),
    DType.FP8: (8, 9),
    DType.INT4: (0, 0),
}
_FIX = {DType.BF16: "use fp16", DType.FP8: "use fp16 or int8", DType.INT8: "use fp16", DType.FP16: "use fp32"}


def detect_cuda() -> Availability:
    """NVIDIA CUDA through torch.cuda, excluding torch builds where torch.cuda is another vendor's
    (ROCm/HIP builds, Kunlunxin XPyTorch).

    Returns:
        Availability with the reason (never initialises CUDA).
    """
    try:
        import torch
    except ImportError as exc:
        return Availability(False, f"torch is not installed ({exc}); install {_INSTALL}")
    if getattr(torch.version, "hip", None):
        return Availability(
            False, f"torch {torch.__version__} is a ROCm/HIP build: torch.cuda drives AMD/Hygon GPUs; use 'rocm'"
        )
    if getattr(torch.version, "cuda", None) is None:
        return Availability(False, f"torch {torch.__version__} is a CPU-only build (torch.version.cuda is None)")
    return detect_torch_module(
        _INSTALL,
        "cuda",
        exclude_module="torch_xmlir",
        exclude_reason="torch.cuda is served by Kunlunxin XPyTorch (torch_xmlir) here; use the 'kunlun' provider",
    )


def _native_dtypes(module: Any, index: int) -> list[DType]:
    cc = device_capability(module, index)
    return [d for d in DType if cc >= _MIN_CC[d]]


def _dtype_hint(dtype: DType, module: Any, index: int) -> str:
    need = _MIN_CC[dtype]
    needs, fix = f"compute capability >= {need[0]}.{need[1]}", _FIX.get(dtype, "use fp32")
    return capability_hint(dtype, needs, fix, module, "cuda", index)


CUDA = VendorSpec(
    name="cuda",
    aliases=("pytorch-cuda",),
    hardware_aliases=("nvidia",),
    **CUDA_API,
    install_hint=_INSTALL,
    priority=100,
    detect=detect_cuda,
    native_dtypes=_native_dtypes,
    dtype_hint=_dtype_hint,
    compute_capability=capability_string,
    fast_copy=True,
    sources=("https://docs.pytorch.org/docs/stable/cuda.html",),
)


class CUDABackendProvider(Provider):
    """KV blocks in GPU memory; streams, events, graphs from torch.cuda; NCCL collectives."""

    vendor = CUDA

    __init__ = accelerator_init(CUDA, Provider.__init__)


create_cuda_backend = vendor_factory(CUDA, CUDABackendProvider)
