"""What :class:`~sagellm_backend.core.provider.Provider` is built from and what its helper modules
(:mod:`.block_ops`, :mod:`.pools`) use of it, as interfaces: they import this module, never the
provider's, and ``vendors/`` stays above ``core/``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from ..storage.base import AcceleratorFacts

if TYPE_CHECKING:
    from ..api.streams import Stream
    from ..device import Device
    from ..kv.geometry import KVGeometry
    from ..protocol import DType
    from ..storage.base import Storage
    from .blocks import BlockTable
    from .config import Availability
    from .ledger import MemoryLedger

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


class ProviderInternals(Protocol):
    """The parts and checks of a provider that its copy, migrate and pool bodies use."""

    _storage: Storage
    _ledger: MemoryLedger
    _blocks: BlockTable
    _faults: FaultHook | None
    _max_memory_bytes: int | None

    @property
    def kv_geometry(self) -> KVGeometry:
        """The KV geometry blocks are sized with."""

    def reachable_devices(self) -> list[str]:
        """Devices this provider can allocate on and migrate blocks to."""

    def _stream_for(self, stream: Stream | None) -> Stream | None:
        """The stream to enqueue on (``None``: synchronous)."""

    def _fault(self, what: str, count: int = 1) -> None:
        """Fault-injection hook."""

    def _target_device(self, device: object) -> Device:
        """A device argument, resolved and checked reachable."""

    def _check_dtype(self, dtype: object, device: Device) -> DType:
        """A dtype argument, checked storable on ``device``."""

    def _alloc(self, device: Device, dtype: DType, shape: tuple[int, ...], nbytes: int, what: str) -> Any:
        """Reserve accounting and allocate."""
