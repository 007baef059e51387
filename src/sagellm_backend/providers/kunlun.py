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

from ..protocol import DType
from ._accel import AcceleratorProvider, VendorSpec, detect_vendor
from .config import Availability, ProviderConfig, provider_factory

__all__ = ["KUNLUN_VENDOR", "KunlunBackendProvider", "create_kunlun_backend", "detect_kunlun"]

KUNLUN_VENDOR = VendorSpec(
    provider="kunlun",
    sdk_module="torch_xmlir",
    torch_module="cuda",
    device_type="cuda",
    dist_backend="nccl",
    graph_class="CUDAGraph",
    install_hint="Kunlunxin XPyTorch (the xpytorch-*.run installer from the Kunlunxin SDK), which provides torch_xmlir",
    sources=(
        "https://github.com/baidu/vLLM-Kunlun vllm_kunlun/platforms/kunlun.py (device_type 'cuda', "
        "dist_backend 'nccl', dtypes fp32/fp16/bf16/int8 on Kunlun3)",
        "https://github.com/baidu/vLLM-Kunlun docs/source/installation.md (xpytorch-*.run installer)",
        "https://vllm-kunlun.readthedocs.io (Kunlun3 P800; XPU_VISIBLE_DEVICES)",
    ),
)

_KUNLUN3_DTYPES = [DType.FP32, DType.FP16, DType.BF16, DType.INT8, DType.INT4]


def detect_kunlun() -> Availability:
    """torch_xmlir importable and ``torch.cuda.is_available()`` (served by XPyTorch).

    Returns:
        Availability with the reason.
    """
    return detect_vendor(KUNLUN_VENDOR)


class KunlunBackendProvider(AcceleratorProvider):
    """KV blocks in Kunlun XPU memory through XPyTorch's torch.cuda; BKCL collectives via 'nccl'.

    Args:
        device_id: XPU ordinal.
        kv_geometry: :class:`~sagellm_backend.kv.geometry.KVGeometry` or dict.
        max_memory_bytes: Optional cap on what this provider allocates on its XPU.
    """

    name = "kunlun"
    device_type = "cuda"
    dist_backend = "nccl"
    accelerator_module = "cuda"
    vendor = KUNLUN_VENDOR

    @classmethod
    def detect(cls) -> Availability:
        return detect_kunlun()

    def _native_dtypes(self) -> list[DType]:
        return list(_KUNLUN3_DTYPES)

    def _dtype_hint(self, dtype: DType) -> str:
        return f"Kunlun3 XPUs compute in fp32/fp16/bf16/int8; {dtype.value} is not among them; use fp16 or int8"


@provider_factory(detect=detect_kunlun, priority=80)
def create_kunlun_backend(config: object = None, **options: Any) -> KunlunBackendProvider:
    """Entry-point factory for ``kunlun``.

    Args:
        config: ``None``, a dict, or an object with ``kind``/``device``/``device_ids``.
        **options: ``device_id``, ``kv_geometry``, ``max_memory_bytes``.

    Returns:
        A :class:`KunlunBackendProvider`.
    """
    cfg = ProviderConfig.from_any(config, **options)
    kwargs = dict(cfg.options)
    index = cfg.device_index("cuda")
    if index is not None:
        kwargs.setdefault("device_id", index)
    return KunlunBackendProvider(**kwargs)
