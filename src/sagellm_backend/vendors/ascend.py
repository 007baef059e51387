"""The Ascend provider (Huawei NPUs through torch_npu). Not run on Ascend hardware here.

Vendor facts (sources in docs/VENDORS.md):

* SDK module ``torch_npu`` (Ascend Extension for PyTorch); importing it adds ``torch.npu``, which
  mirrors ``torch.cuda`` (``is_available``, ``device_count``, ``get_device_name``,
  ``mem_get_info``, ``Stream``, ``Event``, ``empty_cache`` ...).
* Tensors live on device type ``"npu"`` (``"npu:0"``).
* Collectives: torch.distributed backend ``"hccl"``.
* Graph capture: ``torch_npu.npu.NPUGraph`` with the ``torch.npu.graph`` context manager.
* Availability: ``torch.npu.is_available()`` and ``torch.npu.device_count()`` after importing
  torch_npu (neither initialises a device).

Capability rule: fp32, fp16, int8 on every Ascend chip, int4 as packed storage; bf16 on Atlas A2
(``Ascend910B*``) and A3 (``Ascend910_93*``) but not on ``Ascend310P*`` (or the first-generation
``Ascend910A``/``Ascend910ProB``), which vendor-backed inference code converts to fp16; fp8 is not
listed (no Ascend chip of these generations computes in it).
"""

from __future__ import annotations

from typing import Any

from ..core.config import Availability
from ..core.provider import Provider
from ..protocol import DType
from .accelerator import accelerator_init
from .base import VendorSpec, detect_torch_module, torch_api, vendor_factory

__all__ = ["ASCEND", "AscendBackendProvider", "ascend_native_dtypes", "create_ascend_backend", "detect_ascend"]

_INSTALL = "Huawei CANN and torch_npu matching your torch (pip install torch-npu)"
_BF16_PREFIXES = ("ascend910b", "ascend910_93")


def ascend_native_dtypes(soc_name: str) -> list[DType]:
    """Dtypes an Ascend SoC computes in, from its name (``torch.npu.get_device_name``).

    Args:
        soc_name: E.g. ``"Ascend910B4"``, ``"Ascend310P3"``.

    Returns:
        Protocol dtypes, protocol order.
    """
    out = [DType.FP32, DType.FP16]
    if soc_name.strip().lower().startswith(_BF16_PREFIXES):
        out.append(DType.BF16)
    out += [DType.INT8, DType.INT4]
    return out


def detect_ascend() -> Availability:
    """torch_npu importable and ``torch.npu.is_available()``.

    Returns:
        Availability with the reason.
    """
    return detect_torch_module(_INSTALL, "npu", "torch_npu")


def _dtype_hint(dtype: DType, module: Any, index: int) -> str:
    name = module.get_device_name(index)
    if dtype is DType.BF16:
        return f"bf16 needs an Atlas A2/A3 NPU (Ascend910B / Ascend910_93); npu:{index} is {name}; use fp16"
    return f"{name} has no {dtype.value} support in torch_npu; use fp16 or int8"


ASCEND = VendorSpec(
    name="ascend",
    aliases=("pytorch-ascend", "ascend_cann"),
    hardware_aliases=("npu", "huawei"),
    **torch_api("npu", "hccl", "NPUGraph"),
    sdk_module="torch_npu",
    install_hint=_INSTALL,
    priority=90,
    detect=detect_ascend,
    native_dtypes=lambda m, i: ascend_native_dtypes(str(m.get_device_name(i))),
    dtype_hint=_dtype_hint,
    sources=(
        "https://www.hiascend.com/document/detail/zh/canncommercial/700/modeldevpt/ptmigr/ptaoplist_000494.html",
        "https://hiascend.com/doc_center/source/zh/Pytorch/600/apiref/apilist/ptaoplist_001047.html",
        "https://gitcode.com/Ascend/pytorch/blob/master/docs/zh/developer_notes/npugraph.md",
        "https://github.com/vllm-project/vllm-ascend (docs/source/faqs.md: supported Atlas series)",
    ),
)


class AscendBackendProvider(Provider):
    """KV blocks in NPU memory; streams, events, graphs from torch.npu; HCCL collectives."""

    vendor = ASCEND

    __init__ = accelerator_init(ASCEND, Provider.__init__)


create_ascend_backend = vendor_factory(ASCEND, AscendBackendProvider)
