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

from ..protocol import DType
from ._accel import AcceleratorProvider, VendorSpec, detect_vendor
from .config import Availability, ProviderConfig, provider_factory

__all__ = ["ASCEND_VENDOR", "AscendBackendProvider", "ascend_native_dtypes", "create_ascend_backend", "detect_ascend"]

ASCEND_VENDOR = VendorSpec(
    provider="ascend",
    sdk_module="torch_npu",
    torch_module="npu",
    device_type="npu",
    dist_backend="hccl",
    graph_class="NPUGraph",
    install_hint="Huawei CANN and torch_npu matching your torch (pip install torch-npu)",
    sources=(
        "https://www.hiascend.com/document/detail/zh/canncommercial/700/modeldevpt/ptmigr/ptaoplist_000494.html",
        "https://hiascend.com/doc_center/source/zh/Pytorch/600/apiref/apilist/ptaoplist_001047.html",
        "https://gitcode.com/Ascend/pytorch/blob/master/docs/zh/developer_notes/npugraph.md",
        "https://github.com/vllm-project/vllm-ascend (docs/source/faqs.md: supported Atlas series)",
    ),
)

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
    return detect_vendor(ASCEND_VENDOR)


class AscendBackendProvider(AcceleratorProvider):
    """KV blocks in NPU memory; streams, events, graphs from torch.npu; HCCL collectives.

    Args:
        device_id: NPU ordinal.
        kv_geometry: :class:`~sagellm_backend.kv.geometry.KVGeometry` or dict.
        max_memory_bytes: Optional cap on what this provider allocates on its NPU.
    """

    name = "ascend"
    device_type = "npu"
    dist_backend = "hccl"
    accelerator_module = "npu"
    vendor = ASCEND_VENDOR

    @classmethod
    def detect(cls) -> Availability:
        return detect_ascend()

    def _native_dtypes(self) -> list[DType]:
        return ascend_native_dtypes(self._device_name())

    def _dtype_hint(self, dtype: DType) -> str:
        name = self._device_name()
        if dtype is DType.BF16:
            return f"bf16 needs an Atlas A2/A3 NPU (Ascend910B / Ascend910_93); {self.device} is {name}; use fp16"
        return f"{name} has no {dtype.value} support in torch_npu; use fp16 or int8"


@provider_factory(detect=detect_ascend, priority=90)
def create_ascend_backend(config: object = None, **options: Any) -> AscendBackendProvider:
    """Entry-point factory for ``ascend`` (aliases ``pytorch-ascend``, ``ascend_cann``).

    Args:
        config: ``None``, a dict, or an object with ``kind``/``device``/``device_ids``.
        **options: ``device_id``, ``kv_geometry``, ``max_memory_bytes``.

    Returns:
        An :class:`AscendBackendProvider`.
    """
    cfg = ProviderConfig.from_any(config, **options)
    kwargs = dict(cfg.options)
    index = cfg.device_index("npu")
    if index is not None:
        kwargs.setdefault("device_id", index)
    return AscendBackendProvider(**kwargs)
