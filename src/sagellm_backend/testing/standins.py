"""Stand-in vendor SDKs, for testing vendor providers on machines without their hardware.

The way DeepSpeed's accelerator tests stand in for missing SDKs: a fake ``torch_npu`` /
``torch_xmlir`` / ``torch_musa`` goes into ``sys.modules`` and a fake ``torch.<accelerator>``
module answers the calls the providers make (``is_available``, ``device_count``,
``get_device_name``, ``get_device_properties``, ``mem_get_info``, ``Stream``, ``Event`` ...); for
ROCm, ``torch.version.hip`` is set and ``torch.cuda`` answers as a HIP build would. Detection,
device strings, backend names and capability rules then run through the real provider code.

Memory cannot come from a device that is not there, so the ``StandIn*`` provider subclasses keep
tensors in host memory while reporting the vendor's device strings; everything else (accounting,
validation, streams and events through the fake module, pools) is the real provider code.
These stand-ins prove the code paths, never the hardware.
"""

from __future__ import annotations

import importlib.machinery
import itertools
import sys
import time
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from ..core.config import Availability
from ..core.provider import Provider
from ..device import Device
from ..storage.torch_device import TorchDeviceStorage
from ..vendors.accelerator import accelerator_parts
from ..vendors.ascend import AscendBackendProvider
from ..vendors.base import VendorSpec
from ..vendors.kunlun import KunlunBackendProvider
from ..vendors.musa import MusaBackendProvider
from ..vendors.rocm import RocmBackendProvider

__all__ = [
    "FakeAccelerator",
    "HostBackedProvider",
    "StandInAscendProvider",
    "StandInKunlunProvider",
    "StandInMusaProvider",
    "StandInRocmProvider",
    "ascend_standin",
    "kunlun_standin",
    "musa_standin",
    "rocm_standin",
]


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
    _ids = itertools.count(1)

    def __init__(self, device: Any = None, priority: int = 0) -> None:
        self.stream_id = next(self._ids)

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
        capability: What ``get_device_capability`` answers (and ``major``/``minor`` of the properties).
        gcn_arch: ``gcnArchName`` of the properties (ROCm), or ``None``.
    """

    Stream = _FakeStream
    Event = _FakeEvent
    stream = staticmethod(_nullctx)
    device = staticmethod(_nullctx)
    #: No graph class: stand-ins report has_graph_exec=False (nothing could replay on a host).
    CUDAGraph = None
    NPUGraph = None
    MUSAGraph = None

    def __init__(
        self,
        device_names: list[str],
        total_memory: int = 64 << 30,
        *,
        capability: tuple[int, int] = (0, 0),
        gcn_arch: str | None = None,
    ) -> None:
        self.device_names = list(device_names)
        self.total_memory = total_memory
        self.capability = capability
        self.gcn_arch = gcn_arch
        self.empty_cache_calls = 0

    def is_available(self) -> bool:
        return bool(self.device_names)

    def device_count(self) -> int:
        return len(self.device_names)

    def get_device_name(self, index: int | None = None) -> str:
        return self.device_names[index or 0]

    def get_device_capability(self, index: int | None = None) -> tuple[int, int]:
        return self.capability

    def get_device_properties(self, index: int | None = None) -> types.SimpleNamespace:
        props = types.SimpleNamespace(
            name=self.get_device_name(index),
            total_memory=self.total_memory,
            major=self.capability[0],
            minor=self.capability[1],
        )
        if self.gcn_arch is not None:
            props.gcnArchName = self.gcn_arch
        return props

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
            "get_device_capability",
            "get_device_properties",
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
            "MUSAGraph",
        ]


def _fake_sdk(name: str) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
    mod.__doc__ = f"stand-in for {name} (sagellm_backend.testing.standins)"
    return mod


@contextmanager
def _patched(obj: Any, values: dict[str, Any]) -> Iterator[None]:
    """Set attributes of ``obj`` for the block; restore (or remove) them afterwards."""
    missing = object()
    saved = {name: getattr(obj, name, missing) for name in values}
    for name, value in values.items():
        setattr(obj, name, value)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is missing:
                delattr(obj, name)
            else:
                setattr(obj, name, old)


@contextmanager
def _fake_modules(modules: dict[str, types.ModuleType]) -> Iterator[None]:
    """Put fake modules into ``sys.modules`` for the block; restore what was there afterwards."""
    saved = {name: sys.modules.get(name) for name in modules}
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old


def _as_module(name: str, fake: FakeAccelerator) -> types.ModuleType:
    mod = types.ModuleType(name)
    for attr in fake.names():
        setattr(mod, attr, getattr(fake, attr))
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
    with _fake_modules({"torch_npu": _fake_sdk("torch_npu")}), _patched(torch, {"npu": _as_module("torch.npu", fake)}):
        yield fake


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
    with (
        _fake_modules({"torch_xmlir": _fake_sdk("torch_xmlir")}),
        _patched(torch.cuda, {a: getattr(fake, a) for a in fake.names()}),
    ):
        yield fake


@contextmanager
def rocm_standin(
    device_names: list[str] | None = None,
    gcn_arch: str = "gfx942:sramecc+:xnack-",
    *,
    hip_version: str = "6.4.43482",
    torch_version: str | None = None,
) -> Iterator[FakeAccelerator]:
    """Make torch look like a ROCm/HIP build: ``torch.version.hip`` set, ``torch.version.cuda``
    ``None``, and ``torch.cuda`` answering for AMD GPUs (``get_device_properties`` with
    ``gcnArchName``). Everything is restored when the block exits.

    Args:
        device_names: Names per fake GPU (default two ``"AMD Instinct MI300X"``).
        gcn_arch: ``gcnArchName`` every fake GPU reports.
        hip_version: What ``torch.version.hip`` holds.
        torch_version: What ``torch.__version__`` holds (e.g. ``"2.9.0+das.opt1.dtk2604"`` for a
            Hygon DTK build), or ``None`` to keep it.

    Yields:
        The fake accelerator.
    """
    import torch

    names = device_names if device_names is not None else ["AMD Instinct MI300X", "AMD Instinct MI300X"]
    fake = FakeAccelerator(names, 192 << 30, gcn_arch=gcn_arch)
    version = {} if torch_version is None else {"__version__": torch_version}
    with (
        _patched(torch.version, {"hip": hip_version, "cuda": None}),
        _patched(torch, version),
        _patched(torch.cuda, {a: getattr(fake, a) for a in fake.names()}),
    ):
        yield fake


@contextmanager
def musa_standin(
    device_names: list[str] | None = None, capability: tuple[int, int] = (2, 2)
) -> Iterator[FakeAccelerator]:
    """Install a fake ``torch_musa`` and ``torch.musa`` for the duration of the block.

    Args:
        device_names: Names per fake GPU (default two ``"MTT S4000"``).
        capability: MUSA architecture every fake GPU reports (``(2, 2)``: QY2, the S4000).

    Yields:
        The fake accelerator.
    """
    import torch

    fake = FakeAccelerator(
        device_names if device_names is not None else ["MTT S4000", "MTT S4000"], 48 << 30, capability=capability
    )
    with (
        _fake_modules({"torch_musa": _fake_sdk("torch_musa")}),
        _patched(torch, {"musa": _as_module("torch.musa", fake)}),
    ):
        yield fake


class HostBackedStorage(TorchDeviceStorage):
    """A vendor's device storage whose tensors live in host memory (no device exists)."""

    def alloc_tensor(self, device: Device, dtype: Any, shape: tuple[int, ...], *, pinned: bool = False) -> Any:
        import torch

        return torch.empty(shape, dtype=dtype)

    def torch_device(self) -> Any:
        import torch

        return torch.device("cpu")


class HostBackedProvider(Provider):
    """Mixed in before a vendor's provider class (``StandIn*``): that provider, with its tensors in
    host memory (:class:`HostBackedStorage`)."""

    vendor: ClassVar[VendorSpec]

    def __init__(self, device_id: int = 0, **options: Any) -> None:
        """Build the vendor's provider (``self.vendor``) on host-backed storage.

        Args:
            device_id: Device ordinal among the stand-in's fake devices.
            **options: The vendor provider's other keywords (``availability``, ``kv_geometry`` ...).
        """
        availability: Availability | None = options.pop("availability", None)
        parts = accelerator_parts(self.vendor, device_id, availability, storage_class=HostBackedStorage)
        Provider.__init__(self, **parts, **options)


class StandInAscendProvider(HostBackedProvider, AscendBackendProvider):
    """:class:`AscendBackendProvider` under :func:`ascend_standin`, memory on the host."""


class StandInKunlunProvider(HostBackedProvider, KunlunBackendProvider):
    """:class:`KunlunBackendProvider` under :func:`kunlun_standin`, memory on the host."""


class StandInRocmProvider(HostBackedProvider, RocmBackendProvider):
    """:class:`RocmBackendProvider` under :func:`rocm_standin`, memory on the host."""


class StandInMusaProvider(HostBackedProvider, MusaBackendProvider):
    """:class:`MusaBackendProvider` under :func:`musa_standin`, memory on the host."""
