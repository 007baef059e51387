"""numpy storage for the Mock provider: real bytes on simulated devices ``mock:0..N-1`` (and the
host), worker-thread streams, recorded graphs, a memory limit enforced exactly.

Storage dtypes: fp32/fp16/int8 use numpy's; bf16 is stored as raw ``uint16`` bits, fp8 as raw
``uint8`` bits (numpy has neither type); int4 is packed two per byte in ``uint8``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..device import Device
from ..errors import InvalidArgumentTypeError, InvalidDeviceError, UnsupportedOperationError
from ..protocol import DType
from ..streams import HostEvent, HostStream
from .base import DeviceFacts, Storage

if TYPE_CHECKING:
    from ..api.streams import Event, Graph, Stream
    from ..kv.mover import BlockMover

__all__ = ["NumpyStorage"]

_NP_DTYPES: dict[DType, Any] = {
    DType.FP32: np.float32,
    DType.FP16: np.float16,
    DType.BF16: np.uint16,
    DType.FP8: np.uint8,
    DType.INT8: np.int8,
    DType.INT4: np.uint8,
}


def _as_bytes(arr: np.ndarray) -> np.ndarray:
    return arr.reshape(-1).view(np.uint8)


def _submit(stream: Stream | None, fn: Callable[..., Any], *args: Any) -> None:
    if stream is None:
        fn(*args)
    else:
        stream.submit(fn, *args)


@dataclass(eq=False, repr=False)
class NumpyStorage(Storage):
    """Simulated devices backed by numpy arrays.

    Attributes:
        dtypes: Dtypes the mock device advertises and accepts.
        num_devices: Mock devices.
        device_id: The own one.
        total_bytes: Memory of each mock device (the limit).
        used: Bytes the provider holds on its own device now.
        has_graphs: Whether graph capture works.
    """

    dtypes: list[DType]
    num_devices: int
    device_id: int
    total_bytes: int
    used: Callable[[], int]
    has_graphs: bool

    def __post_init__(self) -> None:
        super().__init__("mock")

    def own_device(self) -> Device:
        return Device("mock", self.device_id)

    def reachable(self) -> list[str]:
        others = [f"mock:{i}" for i in range(self.num_devices) if i != self.device_id]
        return [f"mock:{self.device_id}", *others, "cpu"]

    def resolve(self, device: Device) -> Device:
        if device.type == "mock":
            dev = device.with_index(self.device_id)
            if dev.index is not None and dev.index >= self.num_devices:
                raise InvalidDeviceError(
                    f"{dev} does not exist: this mock has devices mock:0..mock:{self.num_devices - 1}. "
                    "Raise num_devices to add more.",
                    device=str(dev),
                )
            return dev
        if device.type == "cpu":
            return device
        raise self.unreachable(device)

    def storable(self, device: Device) -> list[DType]:
        return list(self.dtypes) if device.type == "mock" else list(DType)

    def native_dtypes(self) -> list[DType]:
        return list(self.dtypes)

    def alloc(self, device: Device, dtype: DType, shape: tuple[int, ...]) -> Any:
        return np.empty(shape, dtype=_NP_DTYPES[dtype])

    def copy(self, src: Any, dst: Any, stream: Stream | None) -> None:
        _submit(stream, np.copyto, dst, src)

    def transfer(self, data: Any, device: Device, stream: Stream | None) -> Any:
        new = np.empty_like(data)
        _submit(stream, np.copyto, new, data)
        return new

    def read(self, data: Any) -> bytes:
        return bytes(_as_bytes(np.ascontiguousarray(data)).data)

    def write(self, data: Any, buf: memoryview) -> None:
        _as_bytes(data)[:] = np.frombuffer(buf, dtype=np.uint8)

    def limit(self, device: Device, configured: int | None) -> int | None:
        return self.total_bytes if device.type == "mock" else self.host_limit(configured)

    def available(self, device: Device) -> int:
        return self.total_bytes

    def mover(self) -> BlockMover:
        from .movers.numpy import NumpyMover

        return NumpyMover()

    def create_stream(self, owner: int) -> Stream:
        return HostStream(owner, str(self.own_device()))

    def create_event(self, owner: int) -> Event:
        return HostEvent(owner, str(self.own_device()))

    @contextmanager
    def capture_graph(self, owner: int, stream: Stream | None) -> Iterator[Graph]:
        """Capture the work provider calls enqueue inside the block; like a CUDA graph, captured
        work does not run during capture. ``stream`` is ignored (the mock captures on its own).
        """
        if not self.has_graphs:
            raise UnsupportedOperationError(
                "graph capture is off for this mock (has_graph_exec=False); construct "
                "MockBackendProvider(has_graph_exec=True) to test graph code paths."
            )
        from ..mock.graphs import CaptureStream, MockGraph

        graph = MockGraph()
        cap = CaptureStream(owner, str(self.own_device()))
        with cap:
            yield graph
        graph.install(cap.work)

    def describe(self) -> DeviceFacts:
        return DeviceFacts("Mock Accelerator (sagellm-backend)", self.total_bytes, self.total_bytes - self.used())

    def memory_figures(self, kv_bytes: int, kv_peak: int) -> dict[str, int]:
        return {
            "allocated_bytes": kv_bytes,
            "reserved_bytes": kv_bytes,
            "peak_allocated_bytes": kv_peak,
            "total": self.total_bytes,
            "used": kv_bytes,
            "available": self.total_bytes - kv_bytes,
        }

    def to_device(self, tensor: Any) -> Any:
        try:
            arr = np.asarray(tensor)
        except Exception as exc:  # e.g. a torch tensor that requires grad, an object whose __len__ raises
            raise InvalidArgumentTypeError(
                f"to_device on the mock could not make a numpy array of {type(tensor).__name__} "
                f"({type(exc).__name__}: {exc}); pass a numpy array (detach tensors first)."
            ) from exc
        if arr.dtype.kind not in "biufc":
            raise InvalidArgumentTypeError(
                f"to_device on the mock takes numbers; {type(tensor).__name__} became a {arr.dtype} array. "
                "Pass a numeric numpy array."
            )
        return arr

    def torch_device(self) -> Any:
        raise UnsupportedOperationError(
            "the mock provider has no torch device: it stores numpy arrays. Use get_provider('cpu') for torch tensors."
        )
