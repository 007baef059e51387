"""The ROCm provider: AMD Instinct/Radeon GPUs and Hygon DCUs through a ROCm (HIP) build of torch.
Not run on AMD or Hygon hardware here.

Vendor facts (sources in docs/VENDORS.md):

* A ROCm build of PyTorch sets ``torch.version.hip`` (and leaves ``torch.version.cuda`` ``None``)
  and serves the GPUs through the ``torch.cuda`` API: tensors on device type ``"cuda"``,
  ``torch.cuda.is_available`` / ``device_count`` / ``Stream`` / ``Event`` / ``mem_get_info``.
* Hygon DCUs run Hygon's DTK (DCU Toolkit) and its "DAS" builds of torch
  (``torch.__version__`` like ``2.9.0+das.opt1.dtk2604``): ROCm/HIP builds too, with
  ``torch.version.hip`` set. No ``torch.version.dtk`` attribute is documented; the ``dtk`` tag in
  the version label only names the flavour in messages.
* Collectives: the torch.distributed backend is called ``"nccl"``; it is RCCL underneath.
* Graph capture: ``torch.cuda.CUDAGraph`` records HIP graphs.
* Architecture: ``torch.cuda.get_device_properties(i).gcnArchName``, e.g.
  ``"gfx942:sramecc+:xnack-"``; the part before the first ``:`` is the processor (``gfx942``) and
  stands in for a compute capability.

Capability rule (by processor): fp32, fp16, int8 everywhere, int4 as packed storage. bf16 where
the matrix units compute in it: gfx908 (MI100), gfx90a (MI200), gfx94x (MI300), gfx95x (MI350),
gfx11xx (RDNA3 WMMA), gfx12xx (RDNA4), and the Hygon DCUs whose kernels use bf16 MMAC
(gfx928 K100_AI, gfx92a, gfx936 BW, gfx938); not gfx906 (MI50/60, Hygon Z100), gfx926 (Hygon K100)
or gfx103x (RDNA2). fp8 means OCP ``float8_e4m3fn`` here (what the protocol's fp8 stores): native
on gfx95x and gfx12xx only. gfx94x computes fp8 in the FNUZ encoding (``float8_e4m3fnuz``: other
exponent bias, other NaN), which is not the protocol's fp8, so fp8 is refused there with that
reason.
"""

from __future__ import annotations

from typing import Any

from ..core.config import Availability
from ..core.provider import Provider
from ..protocol import DType
from .accelerator import accelerator_init
from .base import CUDA_API, VendorSpec, detect_torch_module, vendor_factory

__all__ = ["ROCM", "RocmBackendProvider", "create_rocm_backend", "detect_rocm", "gfx_arch", "rocm_native_dtypes"]

_INSTALL = (
    "a ROCm build of torch (pip install torch --index-url https://download.pytorch.org/whl/rocm6.4) "
    "with the AMD ROCm driver, or for Hygon DCUs the Hygon DTK and its DAS torch build"
)
_BF16_PREFIXES = ("gfx908", "gfx90a", "gfx94", "gfx95", "gfx11", "gfx12", "gfx928", "gfx92a", "gfx936", "gfx938")
_OCP_FP8_PREFIXES = ("gfx95", "gfx12")
_FNUZ_FP8_PREFIXES = ("gfx94",)


def gfx_arch(gcn_arch_name: str) -> str:
    """The processor of a ``gcnArchName``, without target features.

    Args:
        gcn_arch_name: E.g. ``"gfx942:sramecc+:xnack-"``.

    Returns:
        E.g. ``"gfx942"`` (lower case).
    """
    return gcn_arch_name.split(":", 1)[0].strip().lower()


def rocm_native_dtypes(gcn_arch_name: str) -> list[DType]:
    """Dtypes an AMD GPU or Hygon DCU computes in, from its architecture.

    Args:
        gcn_arch_name: ``gcnArchName`` of the device (target features are ignored).

    Returns:
        Protocol dtypes, protocol order.
    """
    arch = gfx_arch(gcn_arch_name)
    out = [DType.FP32, DType.FP16]
    if arch.startswith(_BF16_PREFIXES):
        out.append(DType.BF16)
    if arch.startswith(_OCP_FP8_PREFIXES):
        out.append(DType.FP8)
    out += [DType.INT8, DType.INT4]
    return out


def detect_rocm() -> Availability:
    """A ROCm/HIP build of torch (Hygon DTK builds included) with at least one device.

    Reads ``torch.version.hip`` and asks ``torch.cuda.is_available()`` / ``device_count()``,
    neither of which initialises a device.

    Returns:
        Availability with the reason.
    """
    try:
        import torch
    except ImportError as exc:
        return Availability(False, f"torch is not installed ({exc}); install {_INSTALL}")
    hip = getattr(torch.version, "hip", None)
    if not hip:
        cuda = getattr(torch.version, "cuda", None)
        build = f"a CUDA {cuda} build" if cuda else "a CPU-only build"
        return Availability(
            False, f"torch {torch.__version__} is {build}, not a ROCm/HIP build (torch.version.hip is None)"
        )
    flavour = "Hygon DTK" if "dtk" in torch.__version__.lower() else "ROCm"
    found = detect_torch_module(_INSTALL, "cuda")
    if not found.available:
        return Availability(False, f"{flavour} build of torch (HIP {hip}): {found.reason}", found.device_count)
    return Availability(
        True,
        f"{found.device_count} device(s) via torch.cuda on {flavour} (HIP {hip}, torch {torch.__version__})",
        found.device_count,
    )


def _arch(module: Any, index: int) -> str:
    return gfx_arch(str(module.get_device_properties(index).gcnArchName))


def _dtype_hint(dtype: DType, module: Any, index: int) -> str:
    arch = _arch(module, index)
    name = module.get_device_name(index)
    if dtype is DType.FP8 and arch.startswith(_FNUZ_FP8_PREFIXES):
        return (
            f"cuda:{index} ({name}, {arch}) computes fp8 only in the FNUZ encoding (float8_e4m3fnuz), "
            "not the OCP float8_e4m3fn that fp8 means here (that needs gfx95x or gfx12xx); use fp16, bf16 or int8"
        )
    if dtype is DType.FP8:
        return f"fp8 (OCP e4m3fn) needs gfx95x (MI350) or gfx12xx; cuda:{index} ({name}) is {arch}; use fp16 or int8"
    if dtype is DType.BF16:
        return (
            f"bf16 needs gfx908/gfx90a/gfx94x/gfx95x/gfx11xx/gfx12xx or a Hygon gfx928/gfx92a/gfx936/gfx938; "
            f"cuda:{index} ({name}) is {arch}; use fp16"
        )
    return f"{name} ({arch}) has no {dtype.value} support; use fp16"


ROCM = VendorSpec(
    name="rocm",
    aliases=("dcu", "hygon", "haiguang", "amd"),
    hardware_aliases=("haiguang", "hip"),
    **CUDA_API,
    install_hint=_INSTALL,
    priority=95,
    detect=detect_rocm,
    native_dtypes=lambda m, i: rocm_native_dtypes(_arch(m, i)),
    dtype_hint=_dtype_hint,
    compute_capability=_arch,
    fast_copy=True,
    sources=(
        "https://docs.pytorch.org/docs/stable/notes/hip.html (ROCm builds: torch.version.hip, the torch.cuda API)",
        "https://rocm.docs.amd.com/en/latest/reference/precision-support.html (bf16/fp8 on MI100/MI200/MI300)",
        "https://rocm.docs.amd.com/projects/HIP/en/docs-develop/reference/low_fp_types.html (FNUZ fp8 on CDNA3, "
        "OCP fp8 on CDNA4 and RDNA4)",
        "https://github.com/vllm-project/vllm vllm/platforms/rocm.py (device_type 'cuda', dist_backend 'nccl', "
        "gcnArchName, fp8 on gfx94/gfx95/gfx12, fnuz on gfx94)",
        "https://llvm.org/docs/AMDGPUUsage.html (processors) and AMDGPUAsmGFX11.html (v_wmma_f32_16x16x16_bf16)",
    ),
)


class RocmBackendProvider(Provider):
    """KV blocks in AMD GPU / Hygon DCU memory; streams, events, HIP graphs through torch.cuda;
    RCCL collectives (backend ``"nccl"``); batched block copies through Triton's AMD backend."""

    vendor = ROCM

    __init__ = accelerator_init(ROCM, Provider.__init__)


create_rocm_backend = vendor_factory(ROCM, RocmBackendProvider)
