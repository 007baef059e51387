"""The one provider implementation, composed of parts with one job each.

:class:`Provider` validates every argument, keeps the table of live blocks (:mod:`.blocks`),
accounts memory per device (:mod:`.ledger`), enforces limits, and turns storage failures into
typed errors. What differs between vendors is not code here but the parts it is built from: a
:class:`~sagellm_backend.storage.Storage` (numpy host, torch host, torch device), a
:class:`~sagellm_backend.api.comm.Communicator` (torch.distributed, the Mock world, none) and a
:class:`~sagellm_backend.vendors.base.VendorSpec` (the vendor's facts).

Every public method validates fully before it changes anything, so a call that raises leaves the
provider exactly as it was.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, ClassVar

from ..api.blocks import KVBlock
from ..api.comm import Communicator
from ..api.kernels import KernelCandidate
from ..api.provider import BackendProvider
from ..api.streams import Event, Graph, Stream
from ..errors import (
    InvalidArgumentError,
    UnsupportedOperationError,
)
from ..kernels.registry import ProviderKernels
from ..kv.geometry import KVGeometry
from ..protocol import CapabilityDescriptor, DType, KernelKind
from .block_ops import copy_held, migrate_held
from .parts import FaultHook, ProviderInternals, VendorFacts
from .pools import PoolFactory
from .validate import byte_view, check_count

if TYPE_CHECKING:
    from ..kv.pool import KVCachePool
    from ..storage.base import Storage
    from .config import Availability

__all__ = ["FaultHook", "Provider"]

_uids = itertools.count(1)
_COLLECTIVES = ["all_reduce", "all_gather", "reduce_scatter", "broadcast", "barrier", "send", "recv"]


class Provider(BackendProvider):
    """A provider assembled from a vendor spec, a storage and a communicator.

    Args:
        storage: Where blocks live.
        communicator: Collectives.
        kv_geometry: :class:`KVGeometry` or dict (default TinyLlama).
        max_memory_bytes: Optional cap on what this provider holds on its device.
        faults: Optional fault injection.
    """

    vendor: ClassVar[VendorFacts]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        spec = cls.__dict__.get("vendor")
        if spec is not None:  # the vendor spec is the one place these facts are written
            cls.name = spec.name
            cls.device_type = spec.device_type
            cls.dist_backend = spec.dist_backend

    def __init__(
        self,
        *,
        storage: Storage,
        communicator: Communicator,
        kv_geometry: object = None,
        max_memory_bytes: int | None = None,
        faults: FaultHook | None = None,
    ) -> None:
        self._uid = next(_uids)
        self._geometry = KVGeometry.coerce(kv_geometry)
        if max_memory_bytes is not None:
            check_count("max_memory_bytes", max_memory_bytes)
        self._parts = ProviderInternals(
            name=self.name,
            device_type=self.device_type,
            owner_id=self._uid,
            storage=storage,
            kv_geometry=self._geometry,
            max_memory_bytes=max_memory_bytes,
            faults=faults,
        )
        self._storage = storage
        self._comm = communicator
        self._blocks = self._parts.blocks
        self._ledger = self._parts.ledger
        self._pools = PoolFactory(self._parts)
        self._streams: weakref.WeakSet[Stream] = weakref.WeakSet()
        self._advertised_kernels: list[KernelKind] | None = None
        self._kernels = ProviderKernels(search_order=(self.name, self.device_type, "*"))
        self._closed = False
        self._close_lock = threading.Lock()

    # ------------------------------------------------------------------ identity
    @classmethod
    def detect(cls) -> Availability:
        return cls.vendor.detect()

    @property
    def device(self) -> str:
        return str(self._storage.own_device())

    @property
    def kv_geometry(self) -> KVGeometry:
        return self._geometry

    @property
    def owner_id(self) -> int:
        return self._uid

    @property
    def communicator(self) -> Communicator:
        """The provider's communicator."""
        return self._comm

    def reachable_devices(self) -> list[str]:
        return self._storage.reachable()

    def kv_storage_dtypes(self) -> list[DType]:
        """Dtypes a KV block can be stored in on the provider's device."""
        return self._storage.storable(self._storage.own_device())

    def capability(self) -> CapabilityDescriptor:
        facts = self._storage.describe()
        has_coll = self._comm.available
        kernels = self._advertised_kernels
        if kernels is None:
            found = self._kernels.kinds()
            kernels = [k for k in KernelKind if k in found]
        return CapabilityDescriptor(
            device_name=facts.name,
            device_type=self.device_type,
            compute_capability=facts.compute_capability,
            total_memory_bytes=facts.total_bytes,
            available_memory_bytes=facts.free_bytes,
            supported_dtypes=self._storage.native_dtypes(),
            supported_kernels=list(kernels),
            has_stream=True,
            has_event=True,
            has_collective=has_coll,
            has_graph_exec=self._storage.has_graphs,
            supported_collectives=list(_COLLECTIVES) if has_coll else [],
            has_kv_block_copy=True,
            has_kv_block_migrate=True,
            max_memory_mb=int((self._parts.max_memory_bytes or facts.total_bytes) >> 20),
        )

    # ------------------------------------------------------------ engine hooks
    def get_torch_device(self) -> Any:
        """The ``torch.device`` of the provider's device."""
        return self._storage.torch_device()

    def to_device(self, tensor: Any) -> Any:
        return self._storage.to_device(tensor)

    def gpu_utilization(self) -> float | None:
        return self._storage.utilization()

    def get_attention_backend(self, name: str | None = None) -> Any:
        """An attention backend for this device (default ``"sdpa"``; ``"paged"`` on request)."""
        from ..attention.selector import create_attention_backend

        try:
            device: str | None = str(self._storage.torch_device())
        except UnsupportedOperationError:  # the Mock stores numpy arrays: attention runs on the host
            device = None
        return create_attention_backend(name, self.device_type, device=device)

    def get_supported_attention_backends(self) -> list[str]:
        """Names :meth:`get_attention_backend` accepts here, the default first."""
        from ..attention.selector import supported_attention_backends

        return supported_attention_backends(self.device_type)

    # ---------------------------------------------------------------- kernels
    def register_kernel(self, name: str, impl: Callable[..., Any], *, priority: int = 0, kind: Any = None) -> None:
        self._kernels.register(name, impl, priority=priority, kind=kind)

    def get_kernel(self, name: str) -> Callable[..., Any]:
        """The best kernel registered under ``name`` here (this instance, then the global registry)."""
        return self._kernels.get(name)

    def kernel_candidates(self, name: str) -> list[KernelCandidate]:
        return list(self._kernels.candidates(name))

    # ---------------------------------------------------------------- helpers
    def _check_open(self) -> None:
        if self._closed:
            raise InvalidArgumentError(f"the {self.name!r} provider was closed; create a new one with get_provider().")

    # ------------------------------------------------------------------ blocks
    def kv_block_alloc(self, num_tokens: int, dtype: DType, *, device: object = None) -> KVBlock:
        """Allocate a KV block that owns ``num_tokens * bytes_per_token`` bytes."""
        self._check_open()
        n = check_count("num_tokens", num_tokens)
        dev = self._parts.target_device(device)
        dt = self._parts.check_dtype(dtype, dev)
        nbytes = n * self._geometry.bytes_per_token(dt)
        data = self._parts.alloc(dev, dt, self._geometry.storage_shape(n, dt), nbytes, f"a KV block of {n} tokens")
        geometry, owner = self._geometry, self._uid
        return self._blocks.add(lambda h: KVBlock(h, n, dt, str(dev), geometry=geometry, data=data, owner_id=owner))

    def kv_block_free(self, block: KVBlock) -> None:
        """Free ``block``; its memory returns to the provider (or its pool) and the handle dies."""
        with self._blocks.held((block, "block")):
            pool_id, release = block.pool_block_id, self._blocks.view_release(block)
            if release is not None and pool_id is not None:
                release(pool_id, False)  # first: it raises (closed pool) before anything changed
            with self._blocks.lock:
                data = self._blocks.remove(block)
            if release is None or pool_id is None:
                self._ledger.unreserve(block.device, block.nbytes)
                self._storage.release(data, None)

    def kv_block_copy(self, src: KVBlock, dst: KVBlock, *, stream: Stream | None = None) -> None:
        """Copy the bytes of ``src`` into ``dst``, bit for bit."""
        with self._blocks.held((src, "src"), (dst, "dst")):
            copy_held(self._parts, src, dst, stream)

    def kv_block_migrate(self, block: KVBlock, target_device: object, *, stream: Stream | None = None) -> KVBlock:
        with self._blocks.held((block, "block")):
            return migrate_held(self._parts, block, target_device, stream)

    def kv_block_read(self, block: KVBlock) -> bytes:
        """Return a copy of the block's bytes (work on side streams is not waited for)."""
        with self._blocks.held((block, "block")):
            return self._storage.read(block.data)

    def kv_block_write(self, block: KVBlock, data: bytes | bytearray | memoryview) -> None:
        """Overwrite the block with ``data``."""
        self._blocks.check(block)
        buf = byte_view("data", data)
        if buf.nbytes != block.nbytes:
            raise InvalidArgumentError(
                f"data has {buf.nbytes} bytes but block {block.handle} holds {block.nbytes}; "
                "pass exactly block.nbytes bytes."
            )
        with self._blocks.held((block, "block")):
            self._storage.write(block.data, buf)

    def live_blocks(self) -> list[KVBlock]:
        return self._blocks.live()

    def create_kv_pool(
        self,
        num_blocks: int | None = None,
        *,
        block_size: int = 16,
        dtype: DType | str = DType.FP16,
        memory_fraction: float | None = None,
        device: str | None = None,
    ) -> KVCachePool:
        """Preallocate a paged KV-cache pool: one arena, O(1) block ids, reference counts."""
        self._check_open()
        return self._pools.create(num_blocks, block_size, dtype, memory_fraction, device)

    # ----------------------------------------------------------------- memory
    def memory_stats(self) -> dict[str, int]:
        """The device's figures and this provider's own KV accounting."""
        stats = self._ledger.stats(self.device)
        stats["num_blocks"] = len(self._blocks)
        stats.update(self._storage.memory_figures(stats["kv_allocated_bytes"], stats["kv_peak_allocated_bytes"]))
        return stats

    def reset_peak_memory_stats(self) -> None:
        self._ledger.reset_peak()
        self._storage.reset_peak()

    def clear_cache(self) -> None:
        """Drop the pools' recycled swap buffers and return cached device memory."""
        self._storage.synchronize()
        self._pools.clear_host_caches()
        self._storage.clear_cache()

    # ---------------------------------------------------------------- streams
    def create_stream(self) -> Stream:
        """A new stream: a worker-thread stream on hosts, a native stream on accelerators."""
        self._check_open()
        stream = self._storage.create_stream(self._uid)
        self._streams.add(stream)
        return stream

    def create_event(self) -> Event:
        """A timing event (host-stamped on hosts, native on accelerators)."""
        return self._storage.create_event(self._uid)

    def synchronize(self) -> None:
        """Wait for all device work of this provider's device (no-op on hosts)."""
        self._storage.synchronize()

    def capture_graph(self, stream: Stream | None = None) -> AbstractContextManager[Graph]:
        """Capture device work into a graph; ``graph.replay()`` launches it again."""
        s = None if stream is None else self._parts.stream_for(stream)
        return self._storage.capture_graph(self._uid, s)

    # -------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Stop host stream workers and close this provider's pools. Blocks stay readable. Idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        for stream in list(self._streams):
            closer = getattr(stream, "close", None)
            if closer is not None:
                closer()
        self._pools.close_all()
