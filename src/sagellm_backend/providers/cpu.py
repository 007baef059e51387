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
import platform
from typing import Any

from ..device import Device
from ..errors import InvalidArgumentError, UnavailableError
from ..protocol import CapabilityDescriptor, DType
from ._core import check_count
from ._torch import TorchProviderCore, storable_dtypes, torch_dtype
from .config import Availability, ProviderConfig, provider_factory

__all__ = ["CPUBackendProvider", "cpu_flags", "cpu_model_name", "create_cpu_backend", "detect_cpu"]

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
    import os

    return Availability(True, f"torch {torch.__version__} on {os.cpu_count()} CPU cores", 1)


class CPUBackendProvider(TorchProviderCore):
    """KV memory, streams and gloo collectives on the host CPU.

    Args:
        kv_geometry: :class:`~sagellm_backend.kv.geometry.KVGeometry` or dict (default TinyLlama).
        max_memory_bytes: Optional cap on the bytes this provider may hold.
    """

    name = "cpu"
    device_type = "cpu"
    dist_backend = "gloo"

    def __init__(self, *, kv_geometry: object = None, max_memory_bytes: int | None = None) -> None:
        found = detect_cpu()
        if not found.available:
            raise UnavailableError(f"the cpu provider needs torch: {found.reason}.")
        super().__init__(None, kv_geometry=kv_geometry, max_memory_bytes=max_memory_bytes)

    def _resolve_device(self, device: Device) -> Device:
        if device.type == "cpu":
            return device
        raise self._unreachable(device, ["cpu"])

    def kv_storage_dtypes(self) -> list[DType]:
        """Dtypes a KV block can be stored in here (superset of ``supported_dtypes``).

        Returns:
            Protocol dtypes.
        """
        return storable_dtypes()

    def _collectives_available(self) -> bool:
        import torch.distributed as dist

        return bool(dist.is_available() and dist.is_gloo_available())

    def capability(self) -> CapabilityDescriptor:
        """Read the CPU: model name, memory, native dtypes, gloo collectives.

        Returns:
            The descriptor.
        """
        import psutil

        vm = psutil.virtual_memory()
        has_coll = self._collectives_available()
        return CapabilityDescriptor(
            device_name=cpu_model_name(),
            device_type="cpu",
            compute_capability=None,
            total_memory_bytes=int(vm.total),
            available_memory_bytes=int(vm.available),
            supported_dtypes=list(native_cpu_dtypes()),
            supported_kernels=self._kernel_kinds(),
            has_stream=True,
            has_event=True,
            has_collective=has_coll,
            has_graph_exec=False,
            supported_collectives=self._collective_names() if has_coll else [],
            has_kv_block_copy=True,
            has_kv_block_migrate=True,
            max_memory_mb=(self._max_memory_bytes >> 20) if self._max_memory_bytes else int(vm.total >> 20),
        )

    def _available_bytes(self, device: Device) -> int:
        import psutil

        free = int(psutil.virtual_memory().available)
        if self._max_memory_bytes is not None:
            free = min(free, self._max_memory_bytes - self._allocated.get("cpu", 0))
        return free

    def memory_stats(self) -> dict[str, int]:
        """Process and machine memory (psutil) plus this provider's own accounting.

        Returns:
            ``rss``, ``vms``, ``total``, ``available``, ``used`` (machine), and this provider's
            ``allocated_bytes``, ``reserved_bytes``, ``peak_allocated_bytes``, ``num_blocks``.
        """
        import psutil

        vm = psutil.virtual_memory()
        mi = psutil.Process().memory_info()
        stats = self._base_memory_stats()
        stats.update(
            rss=int(mi.rss),
            vms=int(mi.vms),
            total=int(vm.total),
            available=int(vm.available),
            used=int(vm.used),
            allocated_bytes=stats["kv_allocated_bytes"],
            reserved_bytes=stats["kv_allocated_bytes"],
            peak_allocated_bytes=stats["kv_peak_allocated_bytes"],
        )
        return stats

    def clear_cache(self) -> None:
        """Drop the pools' recycled host swap buffers and collect garbage.

        torch's CPU allocator returns freed memory at once, so that is all there is to release.
        """
        import gc

        self._clear_pool_caches()
        gc.collect()


@provider_factory(detect=detect_cpu, priority=10)
def create_cpu_backend(config: object = None, **options: Any) -> CPUBackendProvider:
    """Entry-point factory for ``cpu``.

    Args:
        config: ``None``, a dict, or an object with ``kind``/``device``/``device_ids``.
        **options: ``kv_geometry``, ``max_memory_bytes``.

    Returns:
        A :class:`CPUBackendProvider`.

    Raises:
        InvalidArgumentError: the config names a non-CPU device.
    """
    cfg = ProviderConfig.from_any(config, **options)
    if cfg.device is not None:
        cfg.device_index("cpu")  # raises for e.g. "cuda:0"
    if cfg.device_ids not in (None, [], [0]):
        raise InvalidArgumentError(f"the cpu provider has one device; got device_ids={cfg.device_ids}.")
    if "max_memory_bytes" in cfg.options and cfg.options["max_memory_bytes"] is not None:
        check_count("max_memory_bytes", cfg.options["max_memory_bytes"])
    return CPUBackendProvider(**cfg.options)
