"""Paged KV-cache pool: one preallocated arena per device, O(1) block ids, reference counts.

Arena layout (block-major, so every block is one contiguous run of bytes)::

    arena.shape == (num_blocks, kv_factor, num_layers, block_size, num_kv_heads, head_dim')

``head_dim'`` is ``head_dim`` (``head_dim // 2`` bytes for packed int4). Block ``i`` is
``arena[i]``, exactly the storage of a :class:`~sagellm_backend.api.blocks.KVBlock` of
``block_size`` tokens, so the seed's single-block API works on pool blocks (:meth:`KVCachePool.block`).

A pool is built from three parts: the id allocator (:mod:`.allocator`, pure bookkeeping), the arena
(the storage's array), and a block mover (:mod:`.movers`). It reaches its provider only through a
:class:`PoolHost`. Every batch operation validates first and raises before changing anything.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..core.validate import byte_view
from ..errors import (
    InvalidArgumentError,
    InvalidArgumentTypeError,
)
from ..protocol import DType
from .allocator import BlockAllocator
from .host import PoolHost, PoolStats
from .ids import as_block_id, as_id_list, copy_pairs
from .swap import HostBufferCache, SwappedBlocks

if TYPE_CHECKING:
    from ..api.blocks import KVBlock
    from ..api.streams import Stream
    from .cache_dtype import KVCacheDType
    from .geometry import KVGeometry
    from .movers.base import BlockMover

__all__ = ["KVCachePool", "PoolHost", "PoolStats", "SwappedBlocks"]


class KVCachePool:
    """A paged KV cache on one device. Create it with ``provider.create_kv_pool(...)``.

    Thread-safe: every allocator operation holds the pool's lock.
    """

    def __init__(
        self,
        host: PoolHost,
        arena: Any,
        *,
        device: str,
        dtype: DType,
        block_size: int,
        num_blocks: int,
        block_nbytes: int,
        mover: BlockMover,
        geometry: KVGeometry,
        cache_dtype: KVCacheDType | None = None,
    ) -> None:
        self._host = host
        self._faults = host.faults
        self._arena: Any = arena
        self._mover = mover
        self.device = device
        self.dtype = dtype
        self._cache_dtype = cache_dtype
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.block_nbytes = block_nbytes
        self.geometry = geometry
        self._alloc = BlockAllocator(num_blocks)
        self._lock = threading.Lock()
        self._closed = False
        self._host_buffers = HostBufferCache()
        # a pool dropped without close() still returns its bytes to the provider's accounting
        self._release = weakref.finalize(self, host.released, device, num_blocks * block_nbytes)

    # ------------------------------------------------------------- facts
    @property
    def owner_id(self) -> int:
        """Id of the provider that owns this pool."""
        return self._host.owner_id

    @property
    def closed(self) -> bool:
        """True once :meth:`close` released the arena."""
        return self._closed

    @property
    def kv_cache_dtype(self) -> str:
        """What the blocks hold: ``"fp8_e4m3"``/``"fp8_e5m2"`` for FP8 pools, else ``dtype.value``
        (see :mod:`.cache_dtype`)."""
        if self._cache_dtype is None:
            return self.dtype.value
        return self._cache_dtype.name

    @property
    def arena(self) -> Any:
        """The arena (numpy array or torch tensor), shape ``(num_blocks, *block_shape)``."""
        self._check_open()
        return self._arena

    def kv_caches(self, layer: int | None = None) -> Any:
        """Per-layer ``(K, V)`` views of the arena for paged attention (see :mod:`.layout`): torch tensors of the
        cache dtype (fp8 as ``torch.float8_e4m3fn``/``float8_e5m2``) on torch providers, numpy arrays on the Mock.

        Args:
            layer: A layer index, or ``None`` for every layer.

        Returns:
            ``(K, V)``, or a list of them; pool block ids are the block-table ids.
        """
        from .layout import layer_kv_caches

        return layer_kv_caches(self, layer)

    @property
    def arena_nbytes(self) -> int:
        """Bytes of the arena."""
        return self.num_blocks * self.block_nbytes

    def stats(self) -> PoolStats:
        """Occupancy snapshot.

        Returns:
            A :class:`PoolStats`.
        """
        with self._lock:
            free = self._alloc.num_free
            return PoolStats(
                self.num_blocks,
                free,
                self.num_blocks - free,
                self._alloc.peak_used,
                self._alloc.num_shared,
                self.block_nbytes,
                self.arena_nbytes,
            )

    # -------------------------------------------------------- allocation
    def allocate(self, n: int) -> list[int]:
        """Allocate ``n`` blocks atomically.

        Args:
            n: Number of blocks (>= 0).

        Returns:
            Block ids, each with reference count 1.

        Raises:
            ResourceExhaustedError: not enough free blocks; nothing allocated.
        """
        return self._take(n)[0]

    def _take(self, n: int) -> tuple[list[int], int]:
        """:meth:`allocate`, also returning the peak before it, for :meth:`_give_back`."""
        if type(n) is not int and (isinstance(n, bool) or not isinstance(n, int)):
            raise InvalidArgumentTypeError(
                f"pool.allocate(n): n must be an int block count; got {type(n).__name__} {n!r}."
            )
        if n < 0:
            raise InvalidArgumentError(f"pool.allocate(n): n must be >= 0 blocks; got {n}. Pass a count.")
        if self._closed:
            self._check_open()
        with self._lock:
            peak = self._alloc.peak_used
            ids = self._alloc.allocate(n)
            faults = self._faults
            if faults is not None and faults.armed:
                try:
                    self._host.fault("alloc", len(ids))
                except BaseException:
                    self._alloc.undo_allocate(ids, peak)
                    raise
            return ids, peak

    def _give_back(self, ids: list[int], peak: int) -> None:
        """Undo :meth:`_take` exactly (free list order and peak), for an operation that failed."""
        with self._lock:
            self._alloc.undo_allocate(ids, peak)

    def free(self, ids: Sequence[int]) -> None:
        """Drop one reference per listed id; blocks at zero return to the free list.

        Args:
            ids: Block ids (list, tuple, numpy array or tensor).

        Raises:
            BlockFreedError: an id is free already or freed more often than referenced;
                nothing changed.
        """
        lst = as_id_list(ids, "ids")
        if self._closed:
            self._check_open()
        with self._lock:
            self._alloc.free(lst)

    def fork(self, ids: Sequence[int]) -> list[int]:
        """Share blocks: add one reference to each (prefix reuse). Writers call
        :meth:`make_writable` first.

        Args:
            ids: Live block ids.

        Returns:
            The same ids (now shared).
        """
        lst = as_id_list(ids, "ids")
        self._check_open()
        with self._lock:
            self._alloc.fork(lst)
        return list(lst)

    def refcount(self, block_id: int) -> int:
        """References on ``block_id`` (0 when free).

        Args:
            block_id: A block id.

        Returns:
            The count.
        """
        i = as_block_id(block_id)
        with self._lock:
            self._alloc._check_ids([i])
            return self._alloc.refcount(i)

    def make_writable(self, ids: Sequence[int], *, stream: Stream | None = None) -> list[int]:
        """Copy-on-write: replace every shared id with a private copy of its data.

        Unshared ids are returned unchanged. For each shared id a new block is allocated, the data
        copied, and one reference on the shared block dropped. All or nothing.

        Args:
            ids: A sequence's block ids (no duplicates).
            stream: Stream for the copies (default: current stream, else synchronous).

        Returns:
            The ids to write to, in the same order.

        Raises:
            ResourceExhaustedError: not enough free blocks for the copies; nothing changed.
        """
        from .transfer import make_writable

        return make_writable(self, ids, stream=stream)

    # ----------------------------------------------------------- data
    def copy_blocks(
        self,
        src_ids: Sequence[int] | Any,
        dst_ids: Sequence[int] | Any,
        *,
        stream: Stream | None = None,
        validate: bool = True,
    ) -> None:
        """Copy blocks within the pool in one batched operation (one kernel launch on CUDA).

        Args:
            src_ids: Source block ids.
            dst_ids: Destination block ids: distinct, disjoint from ``src_ids``.
            stream: Enqueue on this stream (default: current stream, else synchronous).
            validate: Check lengths, distinctness, disjointness and liveness (O(n) set work).
                With False the ids are trusted, and int32/int64 index tensors (on the pool's
                device too) are passed to the kernel without any host-side conversion.

        Raises:
            InvalidArgumentError / BlockFreedError: bad ids; nothing copied.
            KVTransferError: the copy failed.
        """
        self._check_open()
        src, dst = copy_pairs(src_ids, dst_ids, validate=validate, num_blocks=self.num_blocks)
        if validate:
            with self._lock:
                self._alloc.require_live(dst, "dst_ids")
                self._alloc.require_live(src, "src_ids")
        if len(src) == 0:
            return
        s = self._host.stream(stream)
        self._host.fault("transfer")
        self._mover.copy_blocks(self._arena, src, dst, s)

    def swap_out(self, ids: Sequence[int], *, stream: Stream | None = None) -> SwappedBlocks:
        """Copy blocks to host memory (pinned on accelerators); see :func:`.transfer.swap_out`.

        Args:
            ids: Live block ids (they stay allocated: free them once ``swapped.wait()`` returns; it
                raises ``StreamError`` if the copy failed or was skipped behind a failure on ``stream``).
            stream: Enqueue on this stream; ``swapped.event`` marks completion.

        Returns:
            The host copy.
        """
        from .transfer import swap_out

        return swap_out(self, ids, stream=stream)

    def clear_host_cache(self) -> None:
        """Drop recycled host swap buffers."""
        self._host_buffers.clear()

    def swap_in(
        self, swapped: SwappedBlocks, dst_ids: Sequence[int] | None = None, *, stream: Stream | None = None
    ) -> list[int]:
        """Copy swapped-out blocks back into the pool; see :func:`.transfer.swap_in`.

        Args:
            swapped: From :meth:`swap_out` of this pool.
            dst_ids: Live destination ids, or ``None`` to allocate new ones (atomically).
            stream: Enqueue on this stream (after the swap-out's event; a failure it carries passes
                to this stream). Without a stream the swap-out is waited for first: its
                ``StreamError`` is raised and no blocks are allocated.

        Returns:
            The destination ids.
        """
        from .transfer import swap_in

        return swap_in(self, swapped, dst_ids, stream=stream)

    def migrate_blocks(self, ids: Sequence[int], target: KVCachePool, *, stream: Stream | None = None) -> list[int]:
        """Copy blocks into another pool of the same provider; see :func:`.transfer.migrate_blocks`.

        Args:
            ids: Live block ids here (they stay allocated).
            target: A pool of the same provider, same dtype and block size.
            stream: Enqueue on this stream.

        Returns:
            The new ids in ``target``.
        """
        from .transfer import migrate_blocks

        return migrate_blocks(self, ids, target, stream=stream)

    def block(self, block_id: int) -> KVBlock:
        """A :class:`KVBlock` view of a pool block, usable with the seed's single-block API.

        The view holds one reference: ``provider.kv_block_free(view)`` drops it (``free`` and
        ``make_writable`` never take it, so the view cannot point at a free block);
        ``kv_block_copy`` / ``kv_block_read`` / ``kv_block_write`` act on the pool's memory;
        ``kv_block_migrate(view, dev)`` copies it out into a standalone block on ``dev`` (on a
        stream the reference is dropped once the copy has run). :meth:`close` frees the views.

        Args:
            block_id: A live block id.

        Returns:
            The view.
        """
        block_id = as_block_id(block_id)
        self._check_open()
        with self._lock:
            self._alloc.require_live([block_id], "block_id")
            view = self._mover.view(self._arena, block_id)
            self._alloc.pin(block_id)
        try:
            return self._host.adopt(self, block_id, view)
        except BaseException:
            self._release_view(block_id)
            raise

    def _release_view(self, block_id: int, quiet: bool = False) -> None:
        """Drop the reference of a view (``kv_block_free`` / ``kv_block_migrate`` of it).

        Args:
            block_id: The view's id.
            quiet: Do nothing on a closed pool (a release queued on a stream) instead of raising.

        Raises:
            InvalidArgumentError: the pool was closed (its views were retired with it).
        """
        with self._lock:
            if quiet and self._closed:
                return
            self._check_open()
            self._alloc.unpin(block_id)

    def read_block(self, block_id: int) -> bytes:
        """Bytes of one block.

        Args:
            block_id: A live block id.

        Returns:
            ``block_nbytes`` bytes.
        """
        block_id = as_block_id(block_id)
        self._check_open()
        with self._lock:
            self._alloc.require_live([block_id], "block_id")
        return self._host.read(self._mover.view(self._arena, block_id))

    def write_block(self, block_id: int, data: bytes | bytearray | memoryview) -> None:
        """Overwrite one block.

        Args:
            block_id: A live block id.
            data: Exactly ``block_nbytes`` bytes.
        """
        block_id = as_block_id(block_id)
        self._check_open()
        with self._lock:
            self._alloc.require_live([block_id], "block_id")
        buf = byte_view("data", data)
        if buf.nbytes != self.block_nbytes:
            raise InvalidArgumentError(f"data has {buf.nbytes} bytes; a block of this pool holds {self.block_nbytes}.")
        self._host.write(self._mover.view(self._arena, block_id), buf)

    # -------------------------------------------------------- lifecycle
    def _check_open(self) -> None:
        if self._closed:
            raise InvalidArgumentError("this KV pool was closed; create a new one with create_kv_pool().")

    def close(self) -> None:
        """Release the arena (its bytes leave ``memory_stats``); its ``KVBlock`` views are freed with
        it (later use raises ``BlockFreedError``). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._mover.forget(self._arena)
            self._arena = None
        self._host.retire_views(self)  # views of the arena die with it (they would keep it alive)
        self._host_buffers.clear()
        self._release()

    def __enter__(self) -> KVCachePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        st = self.stats() if not self._closed else None
        used = f"{st.used_blocks}/{self.num_blocks}" if st else "closed"
        return (
            f"KVCachePool(device={self.device!r}, dtype={self.kv_cache_dtype}, "
            f"block_size={self.block_size}, blocks={used})"
        )
