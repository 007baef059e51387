"""What :class:`~sagellm_backend.core.provider.Provider` is built from (interfaces) and the part of
it that its helper modules (:mod:`.block_ops`, :mod:`.pools`) use (:class:`ProviderInternals`): they
import this module, never the provider's, and ``vendors/`` stays above ``core/``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..api.streams import Stream, current_stream
from ..device import Device, normalize_device
from ..errors import BackendError, InvalidArgumentError, ResourceExhaustedError, UnsupportedDTypeError
from ..protocol import DType, coerce_dtype
from ..storage.base import AcceleratorFacts
from .blocks import BlockTable
from .ledger import MemoryLedger
from .validate import check_instance, fmt_bytes

if TYPE_CHECKING:
    from ..kv.geometry import KVGeometry
    from ..storage.base import Storage
    from .config import Availability

__all__ = ["FaultHook", "ProviderInternals", "VendorFacts"]


class FaultHook(Protocol):
    """Fault injection (the Mock's :class:`~sagellm_backend.mock.faults.MockFaults`)."""

    @property
    def armed(self) -> bool:
        """Whether a fault is pending."""

    def check(self, what: str, count: int = 1) -> None:
        """Raise a typed error to simulate a failure of ``what`` (``"alloc"``/``"transfer"``)."""


class VendorFacts(AcceleratorFacts, Protocol):
    """The vendor facts a provider class reads (``vendors.base.VendorSpec`` has them): a device
    storage's, and these."""

    @property
    def dist_backend(self) -> str | None:
        """torch.distributed backend, or ``None``."""

    def detect(self) -> Availability:
        """Side-effect-free detection."""


@dataclass(eq=False, kw_only=True)
class ProviderInternals:
    """The parts of one provider (storage, block table, memory ledger, fault hook) and the checks
    its block, copy, migrate and pool bodies share. :class:`~sagellm_backend.core.provider.Provider`
    builds one and hands it to :mod:`.block_ops` and :mod:`.pools`; they use nothing else of it.

    Attributes:
        name: The provider's registry name (for messages).
        device_type: Its device type (the default type of device arguments).
        owner_id: The provider's id (its blocks and streams carry it).
        storage: Where blocks live.
        kv_geometry: The KV geometry blocks are sized with.
        max_memory_bytes: Optional cap on what the provider holds on its device.
        faults: Optional fault injection.
        blocks: The provider's block table (built from ``owner_id``).
        ledger: Bytes held per device, limited by the storage and ``max_memory_bytes``.
    """

    name: str
    device_type: str
    owner_id: int
    storage: Storage
    kv_geometry: KVGeometry
    max_memory_bytes: int | None
    faults: FaultHook | None
    blocks: BlockTable = field(init=False)
    ledger: MemoryLedger = field(init=False)

    def __post_init__(self) -> None:
        storage, cap = self.storage, self.max_memory_bytes
        self.blocks = BlockTable(self.owner_id)
        self.ledger = MemoryLedger(lambda d: storage.limit(d, cap))

    def reachable_devices(self) -> list[str]:
        """Devices the provider can allocate on and migrate blocks to."""
        return self.storage.reachable()

    def stream_for(self, stream: Stream | None) -> Stream | None:
        """The stream to enqueue on: the current one for ``None``, else ``stream`` checked.

        Args:
            stream: A stream argument.

        Returns:
            The stream (``None``: synchronous).

        Raises:
            InvalidArgumentTypeError: not a stream.
            InvalidArgumentError: another provider's stream, or a closed one.
        """
        if stream is None:
            return current_stream(self.owner_id)
        stream = check_instance("stream", stream, Stream, "create_stream")  # type: ignore[type-abstract]  # an ABC
        if stream.owner_id != self.owner_id:
            raise InvalidArgumentError(
                f"{stream!r} belongs to another provider instance; use a stream from this provider's create_stream()."
            )
        if stream.closed:  # refused before anything is allocated or enqueued
            raise InvalidArgumentError(f"{stream!r} was closed; create a new one with create_stream().")
        return stream

    def fault(self, what: str, count: int = 1) -> None:
        """Fault-injection hook: raises when the provider's fault injection says so.

        Args:
            what: ``"alloc"`` or ``"transfer"``.
            count: How many operations.
        """
        if self.faults is not None:
            self.faults.check(what, count)

    def target_device(self, device: object) -> Device:
        """A device argument, resolved and checked reachable (``None``: the provider's own).

        Args:
            device: A device-like argument.

        Returns:
            The device.
        """
        if device is None:
            return self.storage.own_device()
        return self.storage.resolve(normalize_device(device, default_type=self.device_type))

    def check_dtype(self, dtype: object, device: Device) -> DType:
        """A dtype argument, checked storable on ``device``.

        Args:
            dtype: A dtype-like argument.
            device: Where it would be stored.

        Returns:
            The dtype.

        Raises:
            UnsupportedDTypeError: the storage cannot hold it there.
        """
        dt = coerce_dtype(dtype)
        supported = self.storage.storable(device)
        if dt not in supported:
            hint = self.storage.dtype_hint(dt, device) or f"the {self.name!r} provider cannot store it there"
            raise UnsupportedDTypeError(
                f"dtype {dt.value} is not supported on {device}: {hint}. "
                f"Supported there: {[d.value for d in supported]}. Use one of those.",
                dtype=dt.value,
                device=str(device),
            )
        return dt

    def alloc(self, device: Device, dtype: DType, shape: tuple[int, ...], nbytes: int, what: str) -> Any:
        """Reserve accounting, allocate, and roll the reservation back on any failure.

        Args:
            device: Where.
            dtype: Element type.
            shape: Array shape.
            nbytes: Bytes to account.
            what: For messages.

        Returns:
            The memory.

        Raises:
            ResourceExhaustedError: over the limit, or the device ran out of memory.
        """
        peak = self.ledger.reserve(str(device), nbytes, what)
        try:
            self.fault("alloc")
            return self.storage.alloc(device, dtype, shape)
        except BaseException as exc:
            self.ledger.unreserve(str(device), nbytes, peak)
            if isinstance(exc, BackendError) or not isinstance(exc, (MemoryError, RuntimeError)):
                raise
            raise ResourceExhaustedError(
                f"the device ran out of memory allocating {what} of {fmt_bytes(nbytes)} on "
                f"{device}: {exc}. Free blocks or call clear_cache(), or allocate fewer tokens.",
                requested=nbytes,
            ) from exc
