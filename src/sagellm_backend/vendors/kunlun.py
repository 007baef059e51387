"""The Kunlun provider (Baidu Kunlunxin XPUs through XPyTorch). Not run on Kunlun hardware here.

Vendor facts (sources in docs/VENDORS.md):

* Kunlunxin ships a customised PyTorch, **XPyTorch** (installed from ``xpytorch-*.run``), whose
  Python module is ``torch_xmlir`` (``python -m torch_xmlir --doctor`` checks an install).
* Under XPyTorch, Kunlun XPUs are served through the **CUDA-shaped API**: tensors go to device
  type ``"cuda"`` (``tensor.cuda()``), and ``torch.cuda`` answers ``is_available``,
  ``device_count``, ``set_device``, ``get_device_capability``, streams and events. vLLM-Kunlun's
  platform reports ``device_type = "cuda"``.
* Collectives: torch.distributed backend ``"nccl"``, which XPyTorch routes to Kunlunxin's BKCL
  (vLLM-Kunlun's platform sets ``dist_backend = "nccl"``).
* Graph capture: vLLM-Kunlun wraps ``torch.cuda.CUDAGraph`` ("Piecewise Kunlun Graph").
* Availability: ``torch_xmlir`` importable and ``torch.cuda.is_available()``.

Because the device type is ``"cuda"``, the ``cuda`` provider's detection steps aside whenever
``torch_xmlir`` is installed, so ``auto`` never mistakes a Kunlun XPU for an NVIDIA GPU.

Capability rule: fp32, fp16, bf16, int8 on Kunlun3 (P800), the dtypes vLLM-Kunlun accepts on
that platform; int4 as packed storage; fp8 not listed.
"""

from __future__ import annotations

from typing import Any

from ..core.config import Availability
from ..core.provider import Provider
from ..protocol import DType
from .accelerator import accelerator_init
from .base import CUDA_API, VendorSpec, detect_torch_module, vendor_factory

__all__ = ["KUNLUN", "KunlunBackendProvider", "create_kunlun_backend", "detect_kunlun"]

_INSTALL = "Kunlunxin XPyTorch (the xpytorch-*.run installer from the Kunlunxin SDK), which provides torch_xmlir"
_KUNLUN3_DTYPES = [DType.FP32, DType.FP16, DType.BF16, DType.INT8, DType.INT4]


def detect_kunlun() -> Availability:
    """torch_xmlir importable and ``torch.cuda.is_available()`` (served by XPyTorch).

    Returns:
        Availability with the reason.
    """
    return detect_torch_module(_INSTALL, "cuda", "torch_xmlir")


def _dtype_hint(dtype: DType, module: Any, index: int) -> str:
    return f"Kunlun3 XPUs compute in fp32/fp16/bf16/int8; {dtype.value} is not among them; use fp16 or int8"


KUNLUN = VendorSpec(
    name="kunlun",
    hardware_aliases=("xpu", "kunlunxin"),
    **CUDA_API,
    sdk_module="torch_xmlir",
    install_hint=_INSTALL,
    priority=80,
    detect=detect_kunlun,
    native_dtypes=lambda m, i: list(_KUNLUN3_DTYPES),
    dtype_hint=_dtype_hint,
    sources=(
        "https://github.com/baidu/vLLM-Kunlun vllm_kunlun/platforms/kunlun.py (device_type 'cuda', "
        "dist_backend 'nccl', dtypes fp32/fp16/bf16/int8 on Kunlun3)",
        "https://github.com/baidu/vLLM-Kunlun docs/source/installation.md (xpytorch-*.run installer)",
        "https://vllm-kunlun.readthedocs.io (Kunlun3 P800; XPU_VISIBLE_DEVICES)",
    ),
)


class KunlunBackendProvider(Provider):
    """KV blocks in Kunlun XPU memory through XPyTorch's torch.cuda; BKCL collectives via 'nccl'."""

    vendor = KUNLUN

    __init__ = accelerator_init(KUNLUN, Provider.__init__)


create_kunlun_backend = vendor_factory(KUNLUN, KunlunBackendProvider)
