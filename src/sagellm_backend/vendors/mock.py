"""The Mock provider: a hardware-free backend that behaves like a real one.

Blocks hold real bytes (numpy arrays), so copies and migrations can be checked byte for byte;
``max_memory_mb`` is enforced; ``memory_stats()`` returns to baseline after frees; handles are
deterministic (1, 2, 3 ... per instance); streams are real worker threads; faults can be injected
(:mod:`sagellm_backend.mock.faults`); and :func:`create_mock_world` gives N providers in one process
whose collectives (one thread per rank) compute real results. Needs numpy and the standard library.
"""

from __future__ import annotations

from typing import Any

from ..comm.mock_world import MockCommunicator, MockWorld
from ..core.config import Availability, ProviderConfig
from ..core.provider import Provider
from ..core.validate import check_count, check_instance
from ..errors import InvalidDeviceError
from ..kernels.engine import register_engine_kernels
from ..mock.faults import MockFaults
from ..protocol import DType, KernelKind, coerce_dtype, coerce_enum
from ..storage.numpy_host import NumpyStorage
from .base import VendorSpec, vendor_factory

__all__ = ["MOCK", "MockBackendProvider", "create_mock_backend", "create_mock_world"]


def _configure(cfg: ProviderConfig, kwargs: dict[str, Any]) -> None:
    index = cfg.device_index("mock")
    if index is not None:
        kwargs.setdefault("device_id", index)
        kwargs.setdefault("num_devices", max(index + 1, len(cfg.device_ids or ())))


MOCK = VendorSpec(
    name="mock",
    device_type="mock",
    dist_backend="mock",
    install_hint="nothing (standard library and numpy)",
    priority=None,
    detect=lambda: Availability(True, "always available (no hardware needed)"),
    configure=_configure,
)


class MockBackendProvider(Provider):
    """Hardware-free provider with real memory, streams, faults and collectives.

    Args:
        supported_dtypes: Dtypes to advertise and accept (default: all six).
        supported_kernels: Kernel kinds to advertise (default: all five).
        has_collective: Whether collectives work (they need :func:`create_mock_world` for N > 1).
        has_graph_exec: Whether :meth:`capture_graph` works.
        max_memory_mb: Memory limit per mock device, enforced.
        num_devices: Mock devices ``mock:0 .. mock:N-1`` (plus ``cpu``) to migrate between.
        device_id: This provider's own mock device.
        kv_geometry: :class:`~sagellm_backend.kv.geometry.KVGeometry` or dict (default TinyLlama).
        world: A :class:`MockWorld` to join (set by :func:`create_mock_world`).
        rank: This provider's rank in ``world``.
        availability: Accepted for the generic factory; the mock is always available.

    Attributes:
        world: The :class:`MockWorld` this provider is a rank of (shared by every provider
            :func:`create_mock_world` returned), or ``None`` for a world of one. After a
            :class:`~sagellm_backend.errors.CommTimeoutError`, ``world.reset()`` repairs it.
        faults: Fault injection (:class:`~sagellm_backend.mock.faults.MockFaults`).

    Raises:
        InvalidArgumentTypeError: ``world`` is not a :class:`MockWorld`.
        InvalidDeviceError: ``device_id`` is not below ``num_devices``.
    """

    vendor = MOCK

    def __init__(
        self,
        supported_dtypes: list[DType] | None = None,
        supported_kernels: list[KernelKind] | None = None,
        has_collective: bool = True,
        has_graph_exec: bool = False,
        max_memory_mb: int = 16384,
        *,
        num_devices: int = 1,
        device_id: int = 0,
        kv_geometry: object = None,
        world: MockWorld | None = None,
        rank: int = 0,
        availability: Availability | None = None,
    ) -> None:
        check_count("max_memory_mb", max_memory_mb)
        check_count("num_devices", num_devices)
        check_count("device_id", device_id, minimum=0)
        if device_id >= num_devices:
            raise InvalidDeviceError(
                f"device_id {device_id} does not exist: the mock has {num_devices} device(s). "
                "Raise num_devices or use a smaller device_id."
            )
        dtypes = list(DType) if supported_dtypes is None else [coerce_dtype(d) for d in supported_dtypes]
        kernels = (
            list(KernelKind)
            if supported_kernels is None
            else [coerce_enum(KernelKind, k, what="kernel kind") for k in supported_kernels]
        )
        if world is not None:
            check_instance("world", world, MockWorld, "create_mock_world")
        comm = MockCommunicator(bool(has_collective), world, rank)
        self.world: MockWorld | None = world
        self.faults = MockFaults()
        self.max_memory_mb = max_memory_mb
        self.num_devices = num_devices
        self.device_id = device_id
        storage = NumpyStorage(
            dtypes,
            num_devices,
            device_id,
            max_memory_mb << 20,
            lambda: self._ledger.allocated(self.device),
            bool(has_graph_exec),
        )
        super().__init__(
            storage=storage,
            communicator=comm,
            kv_geometry=kv_geometry,
            max_memory_bytes=max_memory_mb << 20,
            faults=self.faults,
        )
        self._advertised_kernels = kernels
        register_engine_kernels("mock", "numpy")


create_mock_backend = vendor_factory(MOCK, MockBackendProvider)


def create_mock_world(world_size: int, *, timeout: float = 30.0, **options: Any) -> list[MockBackendProvider]:
    """N Mock providers in one process whose collectives compute real results.

    Run each rank on its own thread (a collective waits for every rank)::

        ranks = create_mock_world(4)
        with ThreadPoolExecutor(4) as ex:
            outs = list(ex.map(lambda p: p.all_reduce(np.ones(3) * p.rank), ranks))

    Args:
        world_size: Number of ranks.
        timeout: Seconds before a rank that waits alone raises :class:`CommTimeoutError`.
        **options: Passed to each :class:`MockBackendProvider`.

    Returns:
        Providers for ranks 0..N-1 (device ``mock:<rank>``).
    """
    world = MockWorld(world_size, timeout)
    options.setdefault("num_devices", world_size)
    return [MockBackendProvider(world=world, rank=r, device_id=r, **options) for r in range(world_size)]
