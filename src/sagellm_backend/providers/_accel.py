"""Accelerator providers over a ``torch.<module>`` of the ``torch.cuda`` shape.

``torch.cuda`` (NVIDIA), ``torch.npu`` (Huawei torch_npu) and Kunlunxin's XPyTorch (which serves
Kunlun XPUs through ``torch.cuda``) expose the same calls: ``is_available``, ``device_count``,
``get_device_name``, ``get_device_properties``, ``mem_get_info``, ``memory_allocated``,
``memory_reserved``, ``max_memory_allocated``, ``empty_cache``, ``synchronize``, ``Stream``,
``Event``, ``stream``, ``device``, ``set_device`` and a graph class. :class:`AcceleratorProvider`
is written once against that shape; each vendor file supplies a :class:`VendorSpec` and its
capability rules.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

from ..contract import Graph, Stream
from ..device import Device
from ..errors import InvalidDeviceError, UnavailableError, UnsupportedDTypeError, UnsupportedOperationError
from ..protocol import CapabilityDescriptor, DType
from ._core import check_count
from ._torch import DeviceStream, TorchGraph, TorchProviderCore, storable_dtypes
from .config import Availability

__all__ = ["AcceleratorProvider", "VendorSpec", "detect_vendor"]


@dataclass(frozen=True)
class VendorSpec:
    """The facts of one vendor, in one place.

    Attributes:
        provider: Registry name.
        sdk_module: Python module to import first (``"torch_npu"``), or ``None``.
        torch_module: Attribute of ``torch`` serving the device (``"cuda"``, ``"npu"``).
        device_type: torch device type string of its tensors.
        dist_backend: torch.distributed backend name.
        graph_class: Graph class name in the torch module (``"CUDAGraph"``, ``"NPUGraph"``).
        install_hint: What to install.
        sources: Where these facts come from.
    """

    provider: str
    sdk_module: str | None
    torch_module: str
    device_type: str
    dist_backend: str
    graph_class: str | None
    install_hint: str
    sources: tuple[str, ...] = ()


def detect_vendor(spec: VendorSpec, *, exclude_module: str | None = None, exclude_reason: str = "") -> Availability:
    """Side-effect-free detection: import torch and the SDK, ask for devices. No device is
    initialised (``is_available`` and ``device_count`` do not create a context).

    Args:
        spec: The vendor's facts.
        exclude_module: A module whose presence means the torch module belongs to another vendor.
        exclude_reason: Why, for the message.

    Returns:
        Availability with the reason.
    """
    try:
        import torch
    except ImportError as exc:
        return Availability(False, f"torch is not installed ({exc}); install {spec.install_hint}")
    if spec.sdk_module is not None:
        if importlib.util.find_spec(spec.sdk_module) is None:
            return Availability(False, f"{spec.sdk_module} is not installed; install {spec.install_hint}")
        try:
            importlib.import_module(spec.sdk_module)
        except Exception as exc:  # vendor SDKs raise many kinds of errors when drivers are missing
            return Availability(False, f"{spec.sdk_module} failed to import: {type(exc).__name__}: {exc}")
    if exclude_module is not None and importlib.util.find_spec(exclude_module) is not None:
        return Availability(False, exclude_reason)
    mod = getattr(torch, spec.torch_module, None)
    if mod is None:
        return Availability(False, f"torch.{spec.torch_module} does not exist in torch {torch.__version__}")
    try:
        ok = bool(mod.is_available())
        count = int(mod.device_count()) if ok else 0
    except Exception as exc:
        return Availability(False, f"torch.{spec.torch_module}.is_available() raised {type(exc).__name__}: {exc}")
    if not ok:
        return Availability(False, f"torch.{spec.torch_module}.is_available() is False", 0)
    if count < 1:
        return Availability(False, f"torch.{spec.torch_module}.device_count() is 0", 0)
    return Availability(True, f"{count} device(s) via torch.{spec.torch_module} (torch {torch.__version__})", count)


class AcceleratorProvider(TorchProviderCore):
    """KV memory, streams, events, graphs and collectives on one accelerator device.

    Args:
        device_id: Device ordinal.
        kv_geometry: :class:`~sagellm_backend.kv.geometry.KVGeometry` or dict.
        max_memory_bytes: Optional cap on what this provider allocates on its device.
    """

    vendor: ClassVar[VendorSpec]

    def __init__(self, device_id: int = 0, *, kv_geometry: object = None, max_memory_bytes: int | None = None) -> None:
        found = self.detect()
        if not found.available:
            raise UnavailableError(
                f"the {self.name!r} provider is not available here: {found.reason}. "
                f"Install {self.vendor.install_hint}.",
                provider=self.name,
            )
        check_count("device_id", device_id, minimum=0)
        count = found.device_count or 0
        if device_id >= count:
            raise InvalidDeviceError(
                f"{self.device_type}:{device_id} does not exist: {count} device(s) are visible "
                f"({self.device_type}:0..{self.device_type}:{count - 1}). Pick one of those.",
                device=device_id,
            )
        self._device_count = count
        super().__init__(device_id, kv_geometry=kv_geometry, max_memory_bytes=max_memory_bytes)

    @classmethod
    def detect(cls) -> Availability:
        """Whether this vendor's devices are usable here, and why (not).

        Returns:
            The availability.
        """
        return detect_vendor(cls.vendor)

    # ------------------------------------------------------------- devices
    def reachable_devices(self) -> list[str]:
        others = [f"{self.device_type}:{i}" for i in range(self._device_count) if i != self.device_id]
        return [self.device, *others, "cpu"]

    def _resolve_device(self, device: Device) -> Device:
        if device.type == "cpu":
            return device
        if device.type == self.device_type:
            dev = device.with_index(self.device_id or 0)
            if dev.index is not None and dev.index >= self._device_count:
                raise InvalidDeviceError(
                    f"{dev} does not exist: {self._device_count} {self.device_type} device(s) are "
                    f"visible. Use one of {self.reachable_devices()}.",
                    device=str(dev),
                )
            return dev
        raise self._unreachable(device, self.reachable_devices())

    def _native_dtypes(self) -> list[DType]:
        """Dtypes the device computes in (vendor rule). Default: all storable."""
        return storable_dtypes()

    def _dtype_hint(self, dtype: DType) -> str:
        """Why ``dtype`` is missing on this device (vendor rule)."""
        return f"{self.name} device {self.device} does not support it"

    def _dtypes_on(self, device: Device) -> list[DType]:
        if device.type == "cpu":
            return storable_dtypes()
        return self._native_dtypes()

    def _check_dtype(self, dtype: object, device: Device) -> DType:
        try:
            return super()._check_dtype(dtype, device)
        except UnsupportedDTypeError as exc:
            from ..protocol import coerce_dtype

            dt = coerce_dtype(dtype)
            raise UnsupportedDTypeError(
                f"{dt.value} is not supported on {device}: {self._dtype_hint(dt)}. "
                f"Supported here: {[d.value for d in self._native_dtypes()]}.",
                dtype=dt.value,
                device=str(device),
            ) from exc

    def _device_limit(self, device: Device) -> int | None:
        if device.type == "cpu":
            return super()._device_limit(device)
        return self._max_memory_bytes if str(device) == self.device else None

    def _available_bytes(self, device: Device) -> int:
        if device.type == "cpu":
            import psutil

            return int(psutil.virtual_memory().available)
        free, _ = self._module().mem_get_info(device.index)
        limit = self._device_limit(device)
        if limit is not None:
            free = min(free, limit - self._allocated.get(str(device), 0))
        return int(free)

    # ---------------------------------------------------------- capability
    def _device_name(self) -> str:
        return str(self._module().get_device_name(self.device_id))

    def _compute_capability(self) -> str | None:
        return None

    def capability(self) -> CapabilityDescriptor:
        """Read the device: name, compute capability, memory, dtypes, collectives, graphs.

        Returns:
            The descriptor.
        """
        mod = self._module()
        free, total = mod.mem_get_info(self.device_id)
        import torch.distributed as dist

        has_coll = bool(dist.is_available() and dist.is_backend_available(self.vendor.dist_backend))
        return CapabilityDescriptor(
            device_name=self._device_name(),
            device_type=self.device_type,
            compute_capability=self._compute_capability(),
            total_memory_bytes=int(total),
            available_memory_bytes=int(free),
            supported_dtypes=self._native_dtypes(),
            supported_kernels=self._kernel_kinds(),
            has_stream=True,
            has_event=True,
            has_collective=has_coll,
            has_graph_exec=self._graph_class() is not None,
            supported_collectives=self._collective_names() if has_coll else [],
            has_kv_block_copy=True,
            has_kv_block_migrate=True,
            max_memory_mb=int((self._max_memory_bytes or total) >> 20),
        )

    # -------------------------------------------------------------- memory
    def memory_stats(self) -> dict[str, int]:
        """The framework allocator's figures for this device, device free/total, and the
        provider's own KV accounting.

        Returns:
            ``allocated_bytes``, ``reserved_bytes``, ``peak_allocated_bytes`` (torch allocator),
            ``total``, ``available`` (device), ``kv_allocated_bytes``, ``kv_peak_allocated_bytes``,
            ``num_blocks``, and ``host_kv_allocated_bytes`` for pinned host blocks.
        """
        mod = self._module()
        free, total = mod.mem_get_info(self.device_id)
        stats = self._base_memory_stats()
        stats.update(
            allocated_bytes=int(mod.memory_allocated(self.device_id)),
            reserved_bytes=int(mod.memory_reserved(self.device_id)),
            peak_allocated_bytes=int(mod.max_memory_allocated(self.device_id)),
            total=int(total),
            available=int(free),
            used=int(total - free),
        )
        return stats

    def clear_cache(self) -> None:
        """Return the framework allocator's unused cached blocks to the device, and drop the
        pools' recycled pinned swap buffers."""
        self.synchronize()
        self._clear_pool_caches()
        self._module().empty_cache()

    def reset_peak_memory_stats(self) -> None:
        """Reset the allocator's and the provider's peak figures."""
        super().reset_peak_memory_stats()
        self._module().reset_peak_memory_stats(self.device_id)

    # -------------------------------------------------------------- graphs
    def _graph_class(self) -> Any:
        name = self.vendor.graph_class
        return None if name is None else getattr(self._module(), name, None)

    @contextmanager
    def capture_graph(self, stream: Stream | None = None) -> Iterator[Graph]:
        """Capture device work into a graph; ``graph.replay()`` launches it again.

        Inside the block, provider calls without ``stream=`` are captured (they run on the
        capture stream). Allocate what the captured work touches before capturing.

        Args:
            stream: A :class:`DeviceStream` to capture on (default: torch's side stream).

        Yields:
            The :class:`TorchGraph`.
        """
        cls = self._graph_class()
        if cls is None:
            raise UnsupportedOperationError(
                f"graph capture is not available: torch.{self.vendor.torch_module} has no "
                f"{self.vendor.graph_class}. Upgrade torch/the vendor plugin, or run eagerly."
            )
        mod = self._module()
        native = cls()
        graph = TorchGraph(native)
        kwargs: dict[str, Any] = {}
        if isinstance(stream, DeviceStream):
            kwargs["stream"] = stream.native
        self.synchronize()
        with mod.device(self.device_id), mod.graph(native, **kwargs):
            yield graph

    # ---------------------------------------------------------------- misc
    def _torch_device(self, device: Device) -> Any:
        import torch

        return torch.device(str(device))
