"""The MUSA provider: Moore Threads GPUs through torch_musa. Not run on Moore Threads hardware here.

Vendor facts (sources in docs/VENDORS.md):

* SDK module ``torch_musa`` (Moore Threads' PyTorch plug-in). Importing it renames torch's
  PrivateUse1 backend to ``"musa"`` and installs itself as ``torch.musa``, which mirrors
  ``torch.cuda`` (``is_available``, ``device_count``, ``get_device_name``,
  ``get_device_capability``, ``mem_get_info``, ``Stream``, ``Event``, ``empty_cache`` ...).
* Tensors live on device type ``"musa"`` (``"musa:0"``).
* Collectives: torch.distributed backend ``"mccl"`` (registered by torch_musa; the MCCL library
  ships for the S4000 and later, not for the S80/S3000).
* Graph capture: ``torch.musa.MUSAGraph`` with the ``torch.musa.graph`` context manager.
* Availability: ``torch_musa`` importable and ``torch.musa.is_available()`` (a device count,
  no device context).

Capability rule, by MUSA architecture ``major * 10 + minor`` of ``get_device_capability``
(21 = QY1: MTT S80/S3000; 22 = QY2: MTT S4000; 31 = the next generation): fp32 and fp16
everywhere; bf16 and int8 from 22 (torch_musa's ``is_bf16_supported`` and its tests' "QY2 or
later" for bf16 and quantized linear); fp8 (``float8_e4m3fn``) from 31 (torch_musa's
``_scaled_mm`` needs arch >= 31); int4 as packed storage.
"""

from __future__ import annotations

from typing import Any

from ..core.config import Availability
from ..core.provider import Provider
from ..protocol import DType
from .accelerator import accelerator_init
from .base import (
    VendorSpec,
    capability_hint,
    capability_string,
    detect_torch_module,
    device_capability,
    torch_api,
    vendor_factory,
)

__all__ = ["MUSA", "MusaBackendProvider", "create_musa_backend", "detect_musa", "musa_native_dtypes"]

_INSTALL = (
    "the Moore Threads MUSA SDK (driver, musa_toolkit, muDNN, MCCL) and torch_musa matching your torch "
    "(https://github.com/MooreThreads/torch_musa)"
)
_MIN_ARCH: dict[DType, int] = {
    DType.FP32: 0,
    DType.FP16: 0,
    DType.BF16: 22,
    DType.FP8: 31,
    DType.INT8: 22,
    DType.INT4: 0,
}
_GPU_OF_ARCH = {21: "MTT S80/S3000", 22: "MTT S4000"}


def musa_native_dtypes(capability: tuple[int, int]) -> list[DType]:
    """Dtypes a Moore Threads GPU computes in, from its MUSA architecture.

    Args:
        capability: ``torch.musa.get_device_capability(i)``, e.g. ``(2, 2)`` for the S4000.

    Returns:
        Protocol dtypes, protocol order.
    """
    arch = int(capability[0]) * 10 + int(capability[1])
    return [d for d in DType if arch >= _MIN_ARCH[d]]


def detect_musa() -> Availability:
    """torch_musa importable and ``torch.musa.is_available()``.

    Returns:
        Availability with the reason.
    """
    return detect_torch_module(_INSTALL, "musa", "torch_musa")


def _dtype_hint(dtype: DType, module: Any, index: int) -> str:
    need = _MIN_ARCH[dtype]
    where = _GPU_OF_ARCH.get(need, "a later Moore Threads GPU")
    return capability_hint(
        dtype, f"MUSA architecture >= {need // 10}.{need % 10} ({where})", "use fp16", module, "musa", index
    )


MUSA = VendorSpec(
    name="musa",
    aliases=("mthreads",),
    hardware_aliases=("moorethreads",),
    **torch_api("musa", "mccl", "MUSAGraph"),
    sdk_module="torch_musa",
    install_hint=_INSTALL,
    priority=70,
    detect=detect_musa,
    native_dtypes=lambda m, i: musa_native_dtypes(device_capability(m, i)),
    dtype_hint=_dtype_hint,
    compute_capability=capability_string,
    sources=(
        "https://github.com/MooreThreads/torch_musa torch_musa/__init__.py (rename_privateuse1_backend('musa'), "
        "torch.musa, torch.version.musa)",
        "https://github.com/MooreThreads/torch_musa torch_musa/core/device.py (is_bf16_supported: arch >= 22)",
        "https://github.com/MooreThreads/torch_musa torch_musa/csrc/distributed/Register.cpp (backend 'mccl'); "
        "README.md (MCCL for S4000 only, USE_MCCL=0 for S80/S3000)",
        "https://github.com/MooreThreads/torch_musa torch_musa/musa_graph/graphs.py (MUSAGraph, graph)",
        "https://github.com/MooreThreads/torch_musa torch_musa/core/_utils.py (21 = QY1, 22 = QY2); tests/unittest "
        "(bf16 / quantized linear on QY2 or later, _scaled_mm on arch >= 31)",
    ),
)


class MusaBackendProvider(Provider):
    """KV blocks in Moore Threads GPU memory; streams, events, MUSA graphs from torch.musa; MCCL."""

    vendor = MUSA

    __init__ = accelerator_init(MUSA, Provider.__init__)


create_musa_backend = vendor_factory(MUSA, MusaBackendProvider)
