"""The storage interface a :class:`~sagellm_backend.core.provider.Provider` is composed with."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..device import Device
from ..errors import DeviceUnreachableError, InvalidArgumentTypeError, UnsupportedOperationError
from ..protocol import DType

if TYPE_CHECKING:
    from ..api.streams import Event, Graph, Stream
    from ..kv.mover import BlockMover

__all__ = ["AcceleratorFacts", "DeviceFacts", "Storage"]


class AcceleratorFacts(Protocol):
    """The vendor facts a device storage reads (the fields of that name of a ``VendorSpec``)."""

    @property
    def name(self) -> str:
        """Registry name, for messages."""

    @property
    def device_type(self) -> str:
        """torch device type of the vendor's tensors."""

    @property
    def torch_module(self) -> str | None:
        """Attribute of ``torch`` serving the device."""

    @property
    def graph_class(self) -> str | None:
        """Graph class in the torch module, or ``None``."""

    @property
    def native_dtypes(self) -> Callable[[Any, int], list[DType]] | None:
        """``(module, index) -> dtypes`` the device computes in, or ``None`` (all)."""

    @property
    def dtype_hint(self) -> Callable[[DType, Any, int], str] | None:
        """``(dtype, module, index) -> why it is missing``, or ``None``."""

    @property
    def compute_capability(self) -> Callable[[Any, int], str | None] | None:
        """``(module, index) -> "9.0"``, or ``None``."""

    @property
    def fast_copy(self) -> bool:
        """Whether the Triton row copier serves batched block copies."""


@dataclass(frozen=True)
class DeviceFacts:
    """What :meth:`Storage.describe` reads from the device.

    Attributes:
        name: Marketing name.
        total_bytes: Device memory.
        free_bytes: Free device memory now.
        compute_capability: ``"9.0"``, ``"gfx942"``... or ``None``.
    """

    name: str
    total_bytes: int
    free_bytes: int
    compute_capability: str | None = None


class Storage(ABC):
    """One kind of memory and its streams.

    Args:
        provider: Provider name, for messages.
    """

    #: Whether :meth:`capture_graph` works.
    has_graphs: bool = False

    def __init__(self, provider: str) -> None:
        self.provider = provider

    # ---------------------------------------------------------------- devices
    @abstractmethod
    def own_device(self) -> Device:
        """The provider's own device (with its index where it has one)."""

    @abstractmethod
    def reachable(self) -> list[str]:
        """Devices blocks can live on, the own device first."""

    @abstractmethod
    def resolve(self, device: Device) -> Device:
        """Fill in the index and check that ``device`` exists and is reachable.

        Args:
            device: A normalised device.

        Returns:
            The device with its index.
        """

    def unreachable(self, device: Device) -> DeviceUnreachableError:
        """The error for a device this storage cannot reach.

        Args:
            device: The device asked for.

        Returns:
            The error to raise.
        """
        return DeviceUnreachableError(
            f"the {self.provider!r} provider cannot reach {device}: it can allocate on and migrate "
            f"to {self.reachable()} only. Use a provider for {device.type} "
            f"(get_provider({device.type!r})) and move bytes with kv_block_read/kv_block_write.",
            device=str(device),
        )

    @abstractmethod
    def storable(self, device: Device) -> list[DType]:
        """Dtypes blocks may be stored in on ``device``."""

    @abstractmethod
    def native_dtypes(self) -> list[DType]:
        """Dtypes the own device computes in (``capability().supported_dtypes``)."""

    def dtype_hint(self, dtype: DType, device: Device) -> str | None:
        """Why ``dtype`` cannot be stored on ``device`` (vendor rule), if there is more to say.

        Args:
            dtype: The refused dtype.
            device: Where.

        Returns:
            A sentence, or ``None``.
        """
        return None

    # ----------------------------------------------------------------- memory
    @abstractmethod
    def alloc(self, device: Device, dtype: DType, shape: tuple[int, ...]) -> Any:
        """Uninitialised storage of ``shape`` (storage shape: int4 packed)."""

    @abstractmethod
    def copy(self, src: Any, dst: Any, stream: Stream | None) -> None:
        """Copy ``src`` into ``dst`` (same shape and dtype); enqueue on ``stream`` if given."""

    @abstractmethod
    def transfer(self, data: Any, device: Device, stream: Stream | None) -> Any:
        """New storage on ``device`` holding ``data``'s bytes (enqueued on ``stream``)."""

    @abstractmethod
    def read(self, data: Any) -> bytes:
        """The bytes of ``data``."""

    @abstractmethod
    def write(self, data: Any, buf: memoryview) -> None:
        """Overwrite ``data`` with ``buf`` (exactly as many bytes)."""

    def release(self, data: Any, stream: Stream | None) -> None:  # noqa: B027 (optional hook)
        """Storage no block uses any more (default: drop the reference).

        Args:
            data: The storage.
            stream: The stream its last use was enqueued on.
        """

    @abstractmethod
    def limit(self, device: Device, configured: int | None) -> int | None:
        """Bytes a provider may hold on ``device`` given its configured cap."""

    @staticmethod
    def host_limit(configured: int | None) -> int:
        """Bytes a provider may hold in host memory: its configured cap, and never more than the
        machine's physical memory (Linux overcommit would let an absurd request "succeed" lazily).

        Args:
            configured: The provider's cap, or ``None``.

        Returns:
            Bytes.
        """
        from ..core.validate import host_memory_total

        host = host_memory_total()
        return host if configured is None else min(host, configured)

    @staticmethod
    def host_available() -> int:
        """Bytes of host memory free now.

        Returns:
            Bytes.
        """
        import psutil

        return int(psutil.virtual_memory().available)

    @abstractmethod
    def available(self, device: Device) -> int:
        """Bytes free on ``device`` now (hardware)."""

    @abstractmethod
    def mover(self) -> BlockMover:
        """The batched block mover for this storage's arenas."""

    # ---------------------------------------------------------------- streams
    @abstractmethod
    def create_stream(self, owner: int) -> Stream:
        """A new stream of provider ``owner``."""

    @abstractmethod
    def create_event(self, owner: int) -> Event:
        """A new timing event of provider ``owner``."""

    def synchronize(self) -> None:  # noqa: B027 (optional hook)
        """Wait for all device work (nothing to wait for on hosts)."""

    def capture_graph(self, owner: int, stream: Stream | None) -> AbstractContextManager[Graph]:
        """Capture work into a graph.

        Args:
            owner: Provider id.
            stream: Capture stream.

        Returns:
            A context manager yielding the graph.
        """
        raise UnsupportedOperationError(
            f"graph capture is not supported by the {self.provider!r} provider; "
            "capability().has_graph_exec tells where it works.",
            provider=self.provider,
        )

    # ------------------------------------------------------------------ facts
    @abstractmethod
    def describe(self) -> DeviceFacts:
        """Read the own device's name, memory and compute capability."""

    @abstractmethod
    def memory_figures(self, kv_bytes: int, kv_peak: int) -> dict[str, int]:
        """``allocated_bytes``, ``reserved_bytes``, ``peak_allocated_bytes``, ``total``,
        ``available``, ``used`` (and any others the device reports).

        Args:
            kv_bytes: What the provider holds on its device.
            kv_peak: Its peak.

        Returns:
            The figures.
        """

    def clear_cache(self) -> None:  # noqa: B027 (optional hook)
        """Return cached, unused memory to the device."""

    def reset_peak(self) -> None:  # noqa: B027 (optional hook)
        """Reset the framework allocator's peak figures."""

    def torch_device(self) -> Any:
        """The ``torch.device`` of the own device.

        Returns:
            The torch device.
        """
        import torch

        return torch.device(str(self.own_device()))

    def to_device(self, tensor: Any) -> Any:
        """Move ``tensor`` to the own device.

        Args:
            tensor: A torch tensor.

        Returns:
            The tensor there.

        Raises:
            InvalidArgumentTypeError: ``tensor`` is not a torch tensor.
        """
        import torch

        if not isinstance(tensor, torch.Tensor):
            raise InvalidArgumentTypeError(
                f"to_device takes a torch.Tensor; got {type(tensor).__name__}. Wrap data with torch.as_tensor(...)."
            )
        return tensor.to(self.torch_device())

    def utilization(self) -> float | None:
        """Device utilisation in percent, where the device reports it.

        Returns:
            0-100 or ``None``.
        """
        return None
