"""Creating a provider's KV pools and serving them: the pool talks to this object (a
:class:`~sagellm_backend.kv.pool.PoolHost`), never to provider internals."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..api.blocks import BlockSource, KVBlock
from ..errors import InvalidArgumentError, InvalidArgumentTypeError, ResourceExhaustedError
from ..protocol import DType
from .validate import check_count, fmt_bytes

if TYPE_CHECKING:
    from ..api.streams import Stream
    from ..kv.pool import KVCachePool
    from .parts import FaultHook, ProviderInternals

__all__ = ["PoolFactory"]


class PoolFactory:
    """Sizes and allocates pool arenas, and provides the services a pool needs.

    Args:
        provider: The owning provider.
    """

    def __init__(self, provider: ProviderInternals) -> None:
        self._provider = provider  # a pool keeps its provider alive: it needs its streams and storage
        self._storage = provider.storage
        self._ledger = provider.ledger
        self._blocks = provider.blocks
        self._faults = provider.faults
        self._lock = threading.Lock()
        self._pools: weakref.WeakSet[KVCachePool] = weakref.WeakSet()

    # --------------------------------------------------------------- creation
    def create(
        self,
        num_blocks: int | None,
        block_size: int,
        dtype: DType | str,
        memory_fraction: float | None,
        device: str | None,
    ) -> KVCachePool:
        """See :meth:`Provider.create_kv_pool`."""
        from ..kv.cache_dtype import resolve_kv_cache_dtype, view_arena
        from ..kv.pool import KVCachePool

        p = self._provider
        bs = check_count("block_size", block_size)
        dev = p.target_device(device)
        cache_dtype = resolve_kv_cache_dtype(dtype)
        dt = p.check_dtype(cache_dtype.dtype, dev)
        geometry = p.kv_geometry
        block_bytes = bs * geometry.bytes_per_token(dt)
        if (num_blocks is None) == (memory_fraction is None):
            raise InvalidArgumentError(
                "create_kv_pool needs exactly one of num_blocks or memory_fraction; got "
                f"num_blocks={num_blocks!r}, memory_fraction={memory_fraction!r}."
            )
        if memory_fraction is not None:
            if isinstance(memory_fraction, bool) or not isinstance(memory_fraction, (int, float)):
                raise InvalidArgumentTypeError(
                    f"memory_fraction must be a float; got {type(memory_fraction).__name__}."
                )
            if not 0.0 < float(memory_fraction) <= 1.0:
                raise InvalidArgumentError(f"memory_fraction must be in (0, 1]; got {memory_fraction}.")
            available = self._available(dev)
            n = int(available * float(memory_fraction)) // block_bytes
            if n < 1:
                raise ResourceExhaustedError(
                    f"{memory_fraction} of the {fmt_bytes(available)} available on {dev} holds no "
                    f"block of {fmt_bytes(block_bytes)}; use a larger fraction or smaller blocks."
                )
        else:
            n = check_count("num_blocks", num_blocks)
        shape = (n, *geometry.storage_shape(bs, dt))
        if cache_dtype.fp8_format is not None:  # a format this torch lacks raises before anything is reserved
            view_arena(self._storage.alloc(dev, dt, (0,)), cache_dtype)
        arena = view_arena(p.alloc(dev, dt, shape, n * block_bytes, f"a KV pool of {n} blocks"), cache_dtype)
        pool = KVCachePool(
            self,
            arena,
            device=str(dev),
            dtype=dt,
            block_size=bs,
            num_blocks=n,
            block_nbytes=block_bytes,
            mover=self._storage.mover(),
            geometry=geometry,
            cache_dtype=cache_dtype,
        )
        with self._lock:
            self._pools.add(pool)
        return pool

    def _available(self, device: Any) -> int:
        free = self._storage.available(device)
        limit = self._storage.limit(device, self._provider.max_memory_bytes)
        if limit is not None:
            free = min(free, limit - self._ledger.allocated(str(device)))
        return free

    # -------------------------------------------------------- pool services
    @property
    def owner_id(self) -> int:
        """The owning provider's id."""
        return self._blocks.owner

    def stream(self, stream: Stream | None) -> Stream | None:
        """Validate a stream argument (default: the current stream).

        Args:
            stream: What the caller passed.

        Returns:
            The stream to use, or ``None`` for synchronous.
        """
        found: Stream | None = self._provider.stream_for(stream)
        return found

    @property
    def faults(self) -> FaultHook | None:
        """The provider's fault injection (the Mock's), or ``None``."""
        return self._faults

    def fault(self, what: str, count: int = 1) -> None:
        """Fault-injection hook.

        Args:
            what: ``"alloc"`` or ``"transfer"``.
            count: How many allocations.
        """
        self._provider.fault(what, count)

    def read(self, view: Any) -> bytes:
        """Bytes of a block view.

        Args:
            view: The view.

        Returns:
            Its bytes.
        """
        return self._storage.read(view)

    def write(self, view: Any, buf: memoryview) -> None:
        """Overwrite a block view.

        Args:
            view: The view.
            buf: Exactly its bytes.
        """
        self._storage.write(view, buf)

    def adopt(self, pool: BlockSource, block_id: int, view: Any, release: Callable[[int, bool], None]) -> KVBlock:
        """Register a :class:`KVBlock` view of a pool block in the provider's table.

        Args:
            pool: The pool.
            block_id: The block id (one reference already taken).
            view: Its memory.
            release: ``release(block_id, quiet)`` drops the view's reference (kept by the table).

        Returns:
            The block view.
        """
        geometry, owner = pool.geometry, self._blocks.owner

        def make(handle: int) -> KVBlock:
            return KVBlock(
                handle,
                pool.block_size,
                pool.dtype,
                pool.device,
                geometry=geometry,
                data=view,
                owner_id=owner,
                pool=pool,
                pool_block_id=block_id,
            )

        return self._blocks.add(make, release)

    def released(self, device: str, nbytes: int) -> None:
        """A pool released its arena (closed, or dropped without closing).

        Args:
            device: The arena's device.
            nbytes: Its bytes.
        """
        self._ledger.unreserve(device, nbytes)

    def retire_views(self, pool: BlockSource) -> None:
        """Free every view of ``pool`` in the block table (the pool is closing).

        Args:
            pool: The closing pool.
        """
        self._blocks.retire(lambda b: b.pool is pool)

    # -------------------------------------------------------------- lifecycle
    def clear_host_caches(self) -> None:
        """Drop every pool's recycled host swap buffers."""
        with self._lock:
            pools = list(self._pools)
        for pool in pools:
            pool.clear_host_cache()

    def close_all(self) -> None:
        """Close every pool."""
        with self._lock:
            pools = list(self._pools)
        for pool in pools:
            pool.close()
