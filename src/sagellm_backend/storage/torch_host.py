"""Host memory as torch tensors (the CPU provider): worker-thread streams, psutil figures."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..device import Device
from ..protocol import DType
from .base import DeviceFacts
from .torch_storage import TorchStorage

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..kv.mover import BlockMover

__all__ = ["TorchHostStorage"]


class TorchHostStorage(TorchStorage):
    """Blocks in host memory.

    Args:
        provider: Provider name.
        native_dtypes: The CPU's native compute dtypes (vendor rule).
        device_name: The CPU model.
    """

    def __init__(self, provider: str, native_dtypes: Callable[[], list[DType]], device_name: Callable[[], str]) -> None:
        super().__init__(provider, None)
        self._native = native_dtypes
        self._name = device_name

    def own_device(self) -> Device:
        return Device("cpu")

    def reachable(self) -> list[str]:
        return ["cpu"]

    def resolve(self, device: Device) -> Device:
        if device.type == "cpu":
            return device
        raise self.unreachable(device)

    def native_dtypes(self) -> list[DType]:
        return self._native()

    def limit(self, device: Device, configured: int | None) -> int | None:
        return self.host_limit(configured)

    def available(self, device: Device) -> int:
        return self.host_available()

    def mover(self) -> BlockMover:
        from .movers.torch_host import TorchHostMover

        return TorchHostMover(self)

    def describe(self) -> DeviceFacts:
        import psutil

        vm = psutil.virtual_memory()
        return DeviceFacts(self._name(), int(vm.total), int(vm.available))

    def memory_figures(self, kv_bytes: int, kv_peak: int) -> dict[str, int]:
        import psutil

        vm = psutil.virtual_memory()
        mi = psutil.Process().memory_info()
        return {
            "rss": int(mi.rss),
            "vms": int(mi.vms),
            "total": int(vm.total),
            "available": int(vm.available),
            "used": int(vm.used),
            "allocated_bytes": kv_bytes,
            "reserved_bytes": kv_bytes,
            "peak_allocated_bytes": kv_peak,
        }

    def clear_cache(self) -> None:
        """torch's CPU allocator returns freed memory at once; collect garbage."""
        import gc

        gc.collect()
