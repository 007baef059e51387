"""Stand-in vendor SDKs, for testing vendor providers on machines without their hardware.

The way DeepSpeed's accelerator tests stand in for missing SDKs: a fake ``torch_npu`` /
``torch_xmlir`` goes into ``sys.modules`` and a fake ``torch.<accelerator>`` module answers the
calls the providers make (``is_available``, ``device_count``, ``get_device_name``,
``mem_get_info``, ``Stream``, ``Event`` ...). Detection, device strings, backend names and
capability rules then run through the real provider code.

Memory cannot come from a device that is not there, so the ``StandIn*`` provider subclasses keep
tensors in host memory while reporting the vendor's device strings; everything else (accounting,
validation, streams and events through the fake module, pools) is the real provider code.
These stand-ins prove the code paths, never the hardware.
"""

from __future__ import annotations

import importlib.machinery
import sys
import time
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..core.config import Availability
from ..core.provider import Provider
from ..device import Device
from ..storage.torch_device import TorchDeviceStorage
from ..vendors.ascend import ASCEND, AscendBackendProvider
from ..vendors.base import VendorSpec, accelerator_parts
from ..vendors.kunlun import KUNLUN, KunlunBackendProvider

__all__ = ["FakeAccelerator", "StandInAscendProvider", "StandInKunlunProvider", "ascend_standin", "kunlun_standin"]


class _FakeEvent:
    def __init__(self, enable_timing: bool = False) -> None:
        self.stamp: float | None = None

    def record(self, stream: Any = None) -> None:
        self.stamp = time.perf_counter()

    def synchronize(self) -> None:
        """Work is synchronous on the stand-in: nothing to wait for."""

    def query(self) -> bool:
        return True

    def elapsed_time(self, end: _FakeEvent) -> float:
        assert self.stamp is not None and end.stamp is not None
        return (end.stamp - self.stamp) * 1000.0


class _FakeStream:
    _next = 1

    def __init__(self, device: Any = None, priority: int = 0) -> None:
        self.stream_id = _FakeStream._next
        _FakeStream._next += 1

    def synchronize(self) -> None:
        """Synchronous stand-in."""

    def query(self) -> bool:
        return True

    def wait_event(self, event: _FakeEvent) -> None:
        """Synchronous stand-in: the event has completed."""


@contextmanager
def _nullctx(*args: Any, **kwargs: Any) -> Iterator[None]:
    yield


class FakeAccelerator:
    """The calls of a ``torch.cuda``-shaped module, answered without hardware.

    Args:
        device_names: One name per fake device (e.g. ``["Ascend910B4", "Ascend910B4"]``).
        total_memory: Bytes per device.
    """

    def __init__(self, device_names: list[str], total_memory: int = 64 << 30) -> None:
        self.device_names = list(device_names)
        self.total_memory = total_memory
        self.empty_cache_calls = 0
        self.Stream = _FakeStream
        self.Event = _FakeEvent
        self.stream = _nullctx
        self.device = _nullctx
        #: No graph class: stand-ins report has_graph_exec=False (nothing could replay on a host).
        self.CUDAGraph = None
        self.NPUGraph = None

    def is_available(self) -> bool:
        return bool(self.device_names)

    def device_count(self) -> int:
        return len(self.device_names)

    def get_device_name(self, index: int | None = None) -> str:
        return self.device_names[index or 0]

    def mem_get_info(self, index: int | None = None) -> tuple[int, int]:
        return self.total_memory // 2, self.total_memory

    def memory_allocated(self, index: int | None = None) -> int:
        return 0

    memory_reserved = memory_allocated
    max_memory_allocated = memory_allocated

    def empty_cache(self) -> None:
        self.empty_cache_calls += 1

    def synchronize(self, index: int | None = None) -> None:
        """Synchronous stand-in."""

    def set_device(self, index: int) -> None:
        """No device to select."""

    def reset_peak_memory_stats(self, index: int | None = None) -> None:
        """Nothing tracked."""

    def names(self) -> list[str]:
        """Attribute names the fake provides."""
        return [
            "is_available",
            "device_count",
            "get_device_name",
            "mem_get_info",
            "memory_allocated",
            "memory_reserved",
            "max_memory_allocated",
            "empty_cache",
            "synchronize",
            "set_device",
            "reset_peak_memory_stats",
            "Stream",
            "Event",
            "stream",
            "device",
            "CUDAGraph",
            "NPUGraph",
        ]


def _fake_sdk(name: str) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
    mod.__doc__ = f"stand-in for {name} (sagellm_backend.testing.standins)"
    return mod


@contextmanager
def ascend_standin(device_names: list[str] | None = None) -> Iterator[FakeAccelerator]:
    """Install a fake ``torch_npu`` and ``torch.npu`` for the duration of the block.

    Args:
        device_names: SoC names per fake NPU (default two ``"Ascend910B4"``).

    Yields:
        The fake accelerator.
    """
    import torch

    fake = FakeAccelerator(device_names if device_names is not None else ["Ascend910B4", "Ascend910B4"])
    npu = types.ModuleType("torch.npu")
    for attr in fake.names():
        setattr(npu, attr, getattr(fake, attr))
    saved_sdk = sys.modules.get("torch_npu")
    had_npu = hasattr(torch, "npu")
    saved_npu = getattr(torch, "npu", None)
    sys.modules["torch_npu"] = _fake_sdk("torch_npu")
    torch.npu = npu  # type: ignore[attr-defined]
    try:
        yield fake
    finally:
        if saved_sdk is None:
            sys.modules.pop("torch_npu", None)
        else:
            sys.modules["torch_npu"] = saved_sdk
        if had_npu:
            torch.npu = saved_npu  # type: ignore[attr-defined]
        else:
            delattr(torch, "npu")


@contextmanager
def kunlun_standin(device_names: list[str] | None = None) -> Iterator[FakeAccelerator]:
    """Install a fake ``torch_xmlir`` and make ``torch.cuda`` answer as XPyTorch would.

    The real ``torch.cuda`` attributes are restored when the block exits.

    Args:
        device_names: Names per fake XPU (default two ``"Kunlun3 P800"``).

    Yields:
        The fake accelerator.
    """
    import torch

    fake = FakeAccelerator(device_names if device_names is not None else ["Kunlun3 P800", "Kunlun3 P800"])
    saved_sdk = sys.modules.get("torch_xmlir")
    saved_attrs = {a: getattr(torch.cuda, a) for a in fake.names() if hasattr(torch.cuda, a)}
    sys.modules["torch_xmlir"] = _fake_sdk("torch_xmlir")
    for attr in fake.names():
        setattr(torch.cuda, attr, getattr(fake, attr))
    try:
        yield fake
    finally:
        for attr in fake.names():
            if attr in saved_attrs:
                setattr(torch.cuda, attr, saved_attrs[attr])
            else:
                delattr(torch.cuda, attr)
        if saved_sdk is None:
            sys.modules.pop("torch_xmlir", None)
        else:
            sys.modules["torch_xmlir"] = saved_sdk


class HostBackedStorage(TorchDeviceStorage):
    """A vendor's device storage whose tensors live in host memory (no device exists)."""

    def alloc_tensor(self, device: Device, dtype: Any, shape: tuple[int, ...], *, pinned: bool = False) -> Any:
        import torch

        return torch.empty(shape, dtype=dtype)

    def torch_device(self) -> Any:
        import torch

        return torch.device("cpu")


def _standin_init(self: Provider, spec: VendorSpec, device_id: int, options: dict[str, Any]) -> None:
    availability: Availability | None = options.pop("availability", None)
    parts = accelerator_parts(spec, device_id, availability, storage_class=HostBackedStorage)
    Provider.__init__(self, **parts, **options)


class StandInAscendProvider(AscendBackendProvider):
    """:class:`AscendBackendProvider` under :func:`ascend_standin`, memory on the host."""

    def __init__(self, device_id: int = 0, **options: Any) -> None:
        _standin_init(self, ASCEND, device_id, options)


class StandInKunlunProvider(KunlunBackendProvider):
    """:class:`KunlunBackendProvider` under :func:`kunlun_standin`, memory on the host."""

    def __init__(self, device_id: int = 0, **options: Any) -> None:
        _standin_init(self, KUNLUN, device_id, options)
