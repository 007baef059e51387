"""Torch-tensor storage shared by the host (CPU) and device (accelerator) storages: allocation,
copies on host or device streams, transfers, byte access."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..device import Device
from ..protocol import DType
from ..streams import HostEvent, HostStream
from .base import Storage
from .device_streams import DeviceStream
from .torch_common import read_tensor, storable_dtypes, torch_dtype, write_tensor

if TYPE_CHECKING:
    from ..api.streams import Stream

__all__ = ["TorchStorage"]


class TorchStorage(Storage):
    """Blocks as torch tensors. Subclasses say where the own device is and how to reach others.

    Args:
        provider: Provider name, for messages.
        module: The ``torch.<accelerator>`` module, or ``None`` for the host.
    """

    def __init__(self, provider: str, module: Any = None) -> None:
        super().__init__(provider)
        self.module = module

    @property
    def is_accelerator(self) -> bool:
        """True when blocks live in device memory by default."""
        return self.module is not None

    def storable(self, device: Device) -> list[DType]:
        return storable_dtypes()

    # ------------------------------------------------------------------ memory
    def alloc_tensor(self, device: Device, dtype: Any, shape: tuple[int, ...], *, pinned: bool = False) -> Any:
        """An uninitialised tensor.

        Args:
            device: Where.
            dtype: torch dtype.
            shape: Shape.
            pinned: Page-locked host memory (host devices only).

        Returns:
            The tensor.
        """
        import torch

        return torch.empty(shape, dtype=dtype, device=str(device), pin_memory=pinned and device.type == "cpu")

    def alloc(self, device: Device, dtype: DType, shape: tuple[int, ...]) -> Any:
        return self.alloc_tensor(device, torch_dtype(dtype), shape, pinned=self.is_accelerator)

    @contextmanager
    def stream_ctx(self, stream: Stream | None) -> Iterator[None]:
        """Make a device stream current for the torch calls inside.

        Args:
            stream: A stream, or ``None``.

        Yields:
            Nothing.
        """
        if isinstance(stream, DeviceStream):
            with self.module.stream(stream.native):
                yield
        else:
            yield

    def keep_alive(self, tensor: Any, stream: Stream | None) -> None:
        """Tell the caching allocator ``tensor`` is in use on a side stream.

        Args:
            tensor: A device tensor.
            stream: The stream.
        """
        if isinstance(stream, DeviceStream) and tensor.device.type != "cpu":
            tensor.record_stream(stream.native)

    def copy(self, src: Any, dst: Any, stream: Stream | None) -> None:
        if isinstance(stream, DeviceStream):
            with self.module.stream(stream.native):
                dst.copy_(src, non_blocking=True)
            self.keep_alive(src, stream)
            self.keep_alive(dst, stream)
        elif stream is not None:  # host streams, capture streams
            stream.submit(dst.copy_, src)
        else:
            dst.copy_(src, non_blocking=self.is_accelerator)

    def transfer(self, data: Any, device: Device, stream: Stream | None) -> Any:
        new = self.alloc_tensor(device, data.dtype, tuple(data.shape), pinned=self.is_accelerator)
        self.copy(data, new, stream)
        return new

    def release(self, data: Any, stream: Stream | None) -> None:
        if data is not None:
            self.keep_alive(data, stream)

    def read(self, data: Any) -> bytes:
        return read_tensor(data)

    def write(self, data: Any, buf: memoryview) -> None:
        write_tensor(data, buf)
        if data.device.type != "cpu":
            self.synchronize()

    # ----------------------------------------------------------------- streams
    def create_stream(self, owner: int) -> Stream:
        return HostStream(owner, str(self.own_device()))

    def create_event(self, owner: int) -> HostEvent:
        return HostEvent(owner, str(self.own_device()))
