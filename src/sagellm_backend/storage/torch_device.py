"""Device memory through a ``torch.<accelerator>`` module (every accelerator vendor): native
streams, events and graphs, pinned host memory for blocks moved to the CPU. What differs between
vendors comes from their facts (:class:`AcceleratorFacts`, which a
:class:`~sagellm_backend.vendors.base.VendorSpec` is)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..device import Device
from ..errors import InvalidDeviceError, UnsupportedOperationError
from ..protocol import DType
from .base import AcceleratorFacts, DeviceFacts
from .device_streams import DeviceEvent, DeviceStream, TorchGraph
from .torch_common import storable_dtypes
from .torch_storage import TorchStorage

if TYPE_CHECKING:
    from ..api.streams import Graph, Stream
    from ..kv.mover import BlockMover

__all__ = ["TorchDeviceStorage"]


class TorchDeviceStorage(TorchStorage):
    """Blocks on one accelerator device, pinned host memory, and peer devices.

    Args:
        vendor: The vendor's facts.
        module: ``torch.<vendor.torch_module>``.
        device_id: The own device's ordinal.
        device_count: Devices visible.
    """

    def __init__(self, vendor: AcceleratorFacts, module: Any, device_id: int, device_count: int) -> None:
        super().__init__(vendor.name, module)
        self.vendor = vendor
        self.device_id = device_id
        self.device_count = device_count
        self.has_graphs = self._graph_class() is not None
        self._mover: BlockMover | None = None

    # ----------------------------------------------------------------- devices
    def own_device(self) -> Device:
        return Device(self.vendor.device_type, self.device_id)

    def reachable(self) -> list[str]:
        t = self.vendor.device_type
        others = [f"{t}:{i}" for i in range(self.device_count) if i != self.device_id]
        return [f"{t}:{self.device_id}", *others, "cpu"]

    def resolve(self, device: Device) -> Device:
        if device.type == "cpu":
            return device
        if device.type == self.vendor.device_type:
            dev = device.with_index(self.device_id)
            if dev.index is not None and dev.index >= self.device_count:
                raise InvalidDeviceError(
                    f"{dev} does not exist: {self.device_count} {dev.type} device(s) are visible. "
                    f"Use one of {self.reachable()}.",
                    device=str(dev),
                )
            return dev
        raise self.unreachable(device)

    def native_dtypes(self) -> list[DType]:
        rule = self.vendor.native_dtypes
        storable = storable_dtypes()
        return storable if rule is None else [d for d in rule(self.module, self.device_id) if d in storable]

    def storable(self, device: Device) -> list[DType]:
        return storable_dtypes() if device.type == "cpu" else self.native_dtypes()

    def dtype_hint(self, dtype: DType, device: Device) -> str | None:
        if dtype not in storable_dtypes():
            return "this torch has no float8_e4m3fn; upgrade torch (>= 2.1)"
        rule = self.vendor.dtype_hint
        return None if rule is None else rule(dtype, self.module, self.device_id)

    # ------------------------------------------------------------------ memory
    def limit(self, device: Device, configured: int | None) -> int | None:
        if device.type == "cpu":
            return self.host_limit(configured)
        return configured if device == self.own_device() else None

    def available(self, device: Device) -> int:
        if device.type == "cpu":
            return self.host_available()
        free, _ = self.module.mem_get_info(device.index)
        return int(free)

    def mover(self) -> BlockMover:
        if self._mover is None:
            from .movers.torch_device import TorchDeviceMover
            from .movers.torch_host import TorchHostMover

            self._mover = TorchDeviceMover(self, TorchHostMover(self), fast_copy=self.vendor.fast_copy)
        return self._mover

    def copy_stream(self) -> Any:
        """A native side stream for device <-> host transfers, created on first use.

        Returns:
            The native stream.
        """
        cs = self.__dict__.get("_copy_stream")
        if cs is None:
            cs = self.module.Stream(device=self.torch_device())
            self.__dict__["_copy_stream"] = cs
        return cs

    # ----------------------------------------------------------------- streams
    def create_stream(self, owner: int) -> Stream:
        native = self.module.Stream(device=self.torch_device())
        return DeviceStream(owner, str(self.own_device()), self.module, native)

    def create_event(self, owner: int) -> DeviceEvent:  # type: ignore[override]  # narrower return type
        with self.module.device(self.device_id):
            return DeviceEvent(owner, str(self.own_device()), self.module)

    def synchronize(self) -> None:
        self.module.synchronize(self.device_id)

    def _graph_class(self) -> Any:
        name = self.vendor.graph_class
        return None if name is None else getattr(self.module, name, None)

    @contextmanager
    def capture_graph(self, owner: int, stream: Stream | None) -> Iterator[Graph]:
        cls = self._graph_class()
        if cls is None:
            raise UnsupportedOperationError(
                f"graph capture is not available: torch.{self.vendor.torch_module} has no "
                f"{self.vendor.graph_class}. Upgrade torch/the vendor plugin, or run eagerly."
            )
        native = cls()
        kwargs: dict[str, Any] = {}
        if isinstance(stream, DeviceStream):
            kwargs["stream"] = stream.native
        self.synchronize()
        with self.module.device(self.device_id), self.module.graph(native, **kwargs):
            yield TorchGraph(native)

    # ------------------------------------------------------------------- facts
    def describe(self) -> DeviceFacts:
        free, total = self.module.mem_get_info(self.device_id)
        cc_rule = self.vendor.compute_capability
        cc = None if cc_rule is None else cc_rule(self.module, self.device_id)
        return DeviceFacts(str(self.module.get_device_name(self.device_id)), int(total), int(free), cc)

    def memory_figures(self, kv_bytes: int, kv_peak: int) -> dict[str, int]:
        m, i = self.module, self.device_id
        free, total = m.mem_get_info(i)
        return {
            "allocated_bytes": int(m.memory_allocated(i)),
            "reserved_bytes": int(m.memory_reserved(i)),
            "peak_allocated_bytes": int(m.max_memory_allocated(i)),
            "total": int(total),
            "available": int(free),
            "used": int(total - free),
        }

    def clear_cache(self) -> None:
        self.module.empty_cache()

    def reset_peak(self) -> None:
        self.module.reset_peak_memory_stats(self.device_id)

    def utilization(self) -> float | None:
        fn = getattr(self.module, "utilization", None)
        if fn is None:
            return None
        try:
            return float(fn(self.device_id))
        except (ImportError, RuntimeError, AttributeError):  # the reading needs NVML (pynvml); absent: unknown
            return None
