"""The CPU provider: KV blocks in host memory (torch tensors), real worker-thread streams,
collectives over torch.distributed's gloo backend.

Capability rule for ``supported_dtypes`` (the dtypes the CPU computes in natively):

* ``fp32``, ``int8`` always; ``int4`` as packed storage (two per byte), as on every provider.
* ``bf16`` when the CPU has ``avx512_bf16`` or ``amx_bf16`` (x86) or ``bf16`` (Arm) *and* a
  probe (a small bf16 matmul through torch) succeeds.
* ``fp16`` when the CPU has ``avx512_fp16`` or ``amx_fp16`` (x86) or ``asimdhp``/``fphp`` (Arm)
  and the probe succeeds.
* ``fp8`` when the CPU has ``amx_fp8`` and torch has ``float8_e4m3fn`` and the probe succeeds.

KV blocks may still *store* every dtype torch can hold (fp16/bf16/fp8 included) on any CPU: see
:meth:`CPUBackendProvider.kv_storage_dtypes`. Without native support torch computes in those
types by converting, which works but is slow, so they are not advertised as supported.
"""

from __future__ import annotations

import functools
import os
import platform

from ..comm.torch_dist import TorchCommunicator
from ..core.config import Availability, ProviderConfig
from ..core.provider import Provider
from ..errors import InvalidArgumentError, UnavailableError
from ..kernels.torch_builtin import register_torch_kernels
from ..protocol import DType
from ..storage.torch_common import storable_dtypes, torch_dtype
from ..storage.torch_host import TorchHostStorage
from .base import VendorSpec, vendor_factory

__all__ = ["CPU", "CPUBackendProvider", "cpu_flags", "cpu_model_name", "create_cpu_backend", "detect_cpu"]

_NATIVE_FLAGS: dict[DType, tuple[str, ...]] = {
    DType.BF16: ("avx512_bf16", "amx_bf16", "bf16"),
    DType.FP16: ("avx512_fp16", "amx_fp16", "asimdhp", "fphp"),
    DType.FP8: ("amx_fp8",),
}


def _cpuinfo_field(names: tuple[str, ...]) -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip().lower() in names:
                    return value.strip()
    except OSError:
        return None
    return None


@functools.lru_cache(maxsize=1)
def cpu_model_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform`` elsewhere).

    Returns:
        E.g. ``"AMD EPYC 9654 96-Core Processor"``.
    """
    name = _cpuinfo_field(("model name", "hardware", "cpu model"))
    return name or platform.processor() or platform.machine() or "unknown CPU"


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """Instruction-set flags of this CPU (x86 ``flags`` / Arm ``Features``).

    Returns:
        Lower-case flag names.
    """
    raw = _cpuinfo_field(("flags", "features")) or ""
    return frozenset(raw.lower().split())


def _probe(dtype: DType) -> bool:
    """True when a small matmul in ``dtype`` runs through torch on this CPU."""
    import torch

    try:
        a = torch.ones((8, 8), dtype=torch_dtype(dtype))
        return bool(torch.isfinite((a @ a).float()).all())
    except (RuntimeError, TypeError, NotImplementedError):
        return False


@functools.lru_cache(maxsize=1)
def native_cpu_dtypes() -> tuple[DType, ...]:
    """Dtypes this CPU computes in natively (see the module docstring for the rule).

    Returns:
        Protocol dtypes in protocol order.
    """
    flags = cpu_flags()
    storable = set(storable_dtypes())
    out = []
    for d in DType:
        always = d in (DType.FP32, DType.INT8, DType.INT4)
        if always or (d in storable and flags.intersection(_NATIVE_FLAGS[d]) and _probe(d)):
            out.append(d)
    return tuple(out)


def detect_cpu() -> Availability:
    """Side-effect-free detection: torch importable.

    Returns:
        Availability with the reason.
    """
    try:
        import torch
    except ImportError as exc:
        return Availability(False, f"torch is not installed ({exc}); install it: pip install 'torch>=2.4'")
    return Availability(True, f"torch {torch.__version__} on {os.cpu_count()} CPU cores", 1)


def _configure(cfg: ProviderConfig, kwargs: dict[str, object]) -> None:
    if cfg.device is not None:
        cfg.device_index("cpu")  # raises for e.g. "cuda:0"
    if cfg.device_ids not in (None, [], [0]):
        raise InvalidArgumentError(f"the cpu provider has one device; got device_ids={cfg.device_ids}.")


CPU = VendorSpec(
    name="cpu",
    device_type="cpu",
    dist_backend="gloo",
    install_hint="torch: pip install 'torch>=2.4'",
    priority=10,
    detect=detect_cpu,
    configure=_configure,
    sources=("https://docs.pytorch.org/docs/stable/distributed.html (gloo)",),
)


class CPUBackendProvider(Provider):
    """KV memory, worker-thread streams and gloo collectives on the host CPU.

    Args:
        kv_geometry: :class:`~sagellm_backend.kv.geometry.KVGeometry` or dict (default TinyLlama).
        max_memory_bytes: Optional cap on the bytes this provider may hold.
        availability: A :func:`detect_cpu` result already computed (skips detection).
    """

    vendor = CPU

    def __init__(
        self,
        *,
        kv_geometry: object = None,
        max_memory_bytes: int | None = None,
        availability: Availability | None = None,
    ) -> None:
        found = availability if availability is not None else detect_cpu()
        if not found.available:
            raise UnavailableError(f"the cpu provider needs torch: {found.reason}.", provider="cpu")
        register_torch_kernels("cpu")
        super().__init__(
            storage=TorchHostStorage("cpu", lambda: list(native_cpu_dtypes()), cpu_model_name),
            communicator=TorchCommunicator("cpu", None, "gloo"),
            kv_geometry=kv_geometry,
            max_memory_bytes=max_memory_bytes,
        )


create_cpu_backend = vendor_factory(CPU, CPUBackendProvider)
