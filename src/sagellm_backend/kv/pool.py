"""Paged KV-cache pool: one preallocated arena per device, O(1) block ids, reference counts.

Arena layout, block-major (block ``i`` is ``arena[i]``, one contiguous run of bytes, the storage of a ``KVBlock``
of ``block_size`` tokens: :meth:`KVCachePool.block`): ``(num_blocks, kv_factor, num_layers, block_size,
num_kv_heads, head_dim)`` (``head_dim // 2`` bytes for packed int4; :meth:`KVCachePool.kv_caches` may read a
layer's pages head-major instead). A pool's parts are held in its :class:`~.state.PoolState` (id allocator, arena,
block mover); it reaches its provider only through a :class:`PoolHost`. Every batch operation validates first and
raises before changing anything.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ..core.validate import byte_view
from ..device import normalize_device
from ..errors import ForeignBlockError, InvalidArgumentError, InvalidArgumentTypeError
from ..protocol import DType
from .ids import as_block_id, as_id_list, copy_pairs
from .layout import layer_kv_caches, same_layout
from .state import PoolHooks, PoolState, PoolStats
from .swap import SwappedBlocks

if TYPE_CHECKING:
    from ..api.blocks import BlockSource, KVBlock
    from ..api.streams import Stream
    from .cache_dtype import KVCacheDType
    from .geometry import KVGeometry
    from .mover import BlockMover

__all__ = ["KVCachePool", "PoolHost", "PoolStats", "SwappedBlocks"]


class PoolHost(PoolHooks, Protocol):
    """What a pool needs from its provider (``core.pools.PoolFactory`` implements it)."""

    @property
    def owner_id(self) -> int:
        """The provider's id."""

    def read(self, view: Any) -> bytes:
        """Bytes of a block view."""

    def write(self, view: Any, buf: memoryview) -> None:
        """Overwrite a block view."""

    def adopt(self, pool: BlockSource, block_id: int, view: Any, release: Callable[[int, bool], None]) -> KVBlock:
        """Register a KVBlock view of a pool block; ``release(block_id, quiet)`` drops its reference."""

    def released(self, device: str, nbytes: int) -> None:
        """The pool's arena is gone."""

    def retire_views(self, pool: BlockSource) -> None:
        """Free every ``KVBlock`` view of ``pool`` (it is closing)."""


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
        self._state = PoolState(host, arena, mover, num_blocks)
        self.device = device
        self.dtype = dtype
        self._cache_dtype = cache_dtype
        self._page_layout: str | None = None  # kv_caches() views' layout, fixed by the first
        self.block_size, self.num_blocks, self.block_nbytes = block_size, num_blocks, block_nbytes
        self.geometry = geometry
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
        return self._state.closed

    @property
    def page_layout(self) -> str | None:
        """``"NHD"``/``"HND"``: how this pool's blocks hold pages, fixed by the first :meth:`kv_caches`; None before."""
        return self._page_layout

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
        self._state.check_open()
        return self._state.arena

    def kv_caches(self, layer: int | None = None, *, page_layout: str = "NHD") -> Any:
        """Per-layer ``(K, V)`` views of the arena for paged attention (see :mod:`.layout`): torch tensors of the
        cache dtype (fp8 as ``torch.float8_e4m3fn``/``float8_e5m2``) on torch providers, numpy arrays on the Mock.

        Args:
            layer: A layer index, or ``None`` for every layer.
            page_layout: ``"NHD"`` (token-major pages) or ``"HND"`` (head-major pages: faster fp8 decode); the
                first call fixes the pool's :attr:`page_layout`.

        Returns:
            ``(K, V)`` or a list of them, each ``[num_blocks, block_size, Hkv, D]``; block ids are the table ids.

        Raises:
            InvalidArgumentError: Another layout than the pool's, or one :func:`.layout.layer_kv_caches` refuses.
        """
        views = layer_kv_caches(self.arena, self.geometry, self.dtype, layer, page_layout)
        self._page_layout = same_layout(self._page_layout, page_layout)
        return views

    @property
    def arena_nbytes(self) -> int:
        """Bytes of the arena."""
        return self.num_blocks * self.block_nbytes

    def stats(self) -> PoolStats:
        """Occupancy snapshot.

        Returns:
            A :class:`PoolStats`.
        """
        return self._state.stats(self.block_nbytes)

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
        return self._state.take(n)[0]

    def free(self, ids: Sequence[int]) -> None:
        """Drop one reference per listed id; blocks at zero return to the free list.

        Args:
            ids: Block ids (list, tuple, numpy array or tensor).

        Raises:
            BlockFreedError: an id is free already or freed more often than referenced;
                nothing changed.
        """
        lst = as_id_list(ids, "ids")
        st = self._state
        if st.closed:
            st.check_open()
        with st.lock:
            st.alloc.free(lst)

    def fork(self, ids: Sequence[int]) -> list[int]:
        """Share blocks: add one reference to each (prefix reuse). Writers call
        :meth:`make_writable` first.

        Args:
            ids: Live block ids.

        Returns:
            The same ids (now shared).
        """
        lst = as_id_list(ids, "ids")
        st = self._state
        st.check_open()
        with st.lock:
            st.alloc.fork(lst)
        return list(lst)

    def refcount(self, block_id: int) -> int:
        """References on ``block_id`` (0 when free).

        Args:
            block_id: A block id.

        Returns:
            The count.
        """
        i = as_block_id(block_id)
        st = self._state
        with st.lock:
            st.alloc.check_ids([i])
            return st.alloc.refcount(i)

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
        return self._state.make_writable(ids, stream=stream)

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
        st = self._state
        if st.closed:
            st.check_open()
        src, dst = copy_pairs(src_ids, dst_ids, validate=validate, num_blocks=self.num_blocks)
        if validate:
            with st.lock:
                st.alloc.require_live(dst, "dst_ids")
                st.alloc.require_live(src, "src_ids")
        if len(src) == 0:
            return
        s = self._host.stream(stream)
        self._host.fault("transfer")
        st.mover.copy_blocks(st.arena, src, dst, s)

    def swap_out(self, ids: Sequence[int], *, stream: Stream | None = None) -> SwappedBlocks:
        """Copy blocks to host memory (pinned on accelerators); see :meth:`.state.PoolState.swap_out`.

        Args:
            ids: Live block ids (they stay allocated: free them once ``swapped.wait()`` returns; it
                raises ``StreamError`` if the copy failed or was skipped behind a failure on ``stream``).
            stream: Enqueue on this stream; ``swapped.event`` marks completion.

        Returns:
            The host copy.
        """
        st = self._state
        rows, lst, event = st.swap_out(ids, stream=stream)
        return SwappedBlocks(self, rows, lst, event, block_nbytes=self.block_nbytes, buffers=st.buffers)

    def clear_host_cache(self) -> None:
        """Drop recycled host swap buffers."""
        self._state.buffers.clear()

    def swap_in(
        self, swapped: SwappedBlocks, dst_ids: Sequence[int] | None = None, *, stream: Stream | None = None
    ) -> list[int]:
        """Copy swapped-out blocks back into the pool; see :meth:`.state.PoolState.swap_in`.

        Args:
            swapped: From :meth:`swap_out` of this pool.
            dst_ids: Live destination ids, or ``None`` to allocate new ones (atomically).
            stream: Enqueue on this stream (after the swap-out's event; a failure it carries passes
                to this stream). Without a stream the swap-out is waited for first: its
                ``StreamError`` is raised and no blocks are allocated.

        Returns:
            The destination ids.
        """
        if not isinstance(swapped, SwappedBlocks):
            raise InvalidArgumentTypeError(
                f"swap_in needs the SwappedBlocks from swap_out(); got {type(swapped).__name__}."
            )
        if swapped.data is None:
            raise InvalidArgumentError(
                "these swapped-out blocks were released (SwappedBlocks.release()); their host copy is gone. "
                "Swap in before releasing."
            )
        if swapped.pool is not self:
            raise ForeignBlockError("these blocks were swapped out of another pool; swap them in there.")
        return self._state.swap_in(swapped, dst_ids, stream=stream)

    def migrate_blocks(self, ids: Sequence[int], target: KVCachePool, *, stream: Stream | None = None) -> list[int]:
        """Copy blocks into another pool of the same provider; see :meth:`.state.PoolState.migrate_blocks`.

        Args:
            ids: Live block ids here (they stay allocated).
            target: A pool of the same provider, same dtype, block size and (once views were made) page layout.
            stream: Enqueue on this stream.

        Returns:
            The new ids in ``target``.
        """
        if not isinstance(target, KVCachePool):
            raise InvalidArgumentTypeError(f"target must be a KVCachePool; got {type(target).__name__}.")
        if target.owner_id != self.owner_id:
            raise ForeignBlockError(
                "target pool belongs to another provider instance; create it with this "
                "provider's create_kv_pool(device=...)."
            )
        if (target.kv_cache_dtype, target.block_size) != (self.kv_cache_dtype, self.block_size):
            raise InvalidArgumentError(
                f"target pool holds {target.block_size}-token {target.kv_cache_dtype} blocks, this one "
                f"{self.block_size}-token {self.kv_cache_dtype}; they must match."
            )
        if None not in (self.page_layout, target.page_layout) and self.page_layout != target.page_layout:
            raise InvalidArgumentError(f"target pool holds {target.page_layout} pages, this one {self.page_layout}.")
        # the same class: a pool reads the parts of a pool it checked is one of its provider's
        return self._state.migrate_blocks(ids, target._state, normalize_device(target.device), stream=stream)

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
        st = self._state
        st.check_open()
        with st.lock:
            st.alloc.require_live([block_id], "block_id")
            view = st.mover.view(st.arena, block_id)
            st.alloc.pin(block_id)
        try:
            return self._host.adopt(self, block_id, view, self._release_view)
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
        st = self._state
        with st.lock:
            if quiet and st.closed:
                return
            st.check_open()
            st.alloc.unpin(block_id)

    def read_block(self, block_id: int) -> bytes:
        """Bytes of one block.

        Args:
            block_id: A live block id.

        Returns:
            ``block_nbytes`` bytes.
        """
        block_id = as_block_id(block_id)
        st = self._state
        st.check_open()
        st.require_live([block_id], "block_id")
        return self._host.read(st.mover.view(st.arena, block_id))

    def write_block(self, block_id: int, data: bytes | bytearray | memoryview) -> None:
        """Overwrite one block.

        Args:
            block_id: A live block id.
            data: Exactly ``block_nbytes`` bytes.
        """
        block_id = as_block_id(block_id)
        st = self._state
        st.check_open()
        st.require_live([block_id], "block_id")
        buf = byte_view("data", data)
        if buf.nbytes != self.block_nbytes:
            raise InvalidArgumentError(f"data has {buf.nbytes} bytes; a block of this pool holds {self.block_nbytes}.")
        self._host.write(st.mover.view(st.arena, block_id), buf)

    # -------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Release the arena (its bytes leave ``memory_stats``); its ``KVBlock`` views are freed with
        it (later use raises ``BlockFreedError``). Idempotent."""
        st = self._state
        with st.lock:
            if st.closed:
                return
            st.closed = True
            st.mover.forget(st.arena)
            st.arena = None
        self._host.retire_views(self)  # views of the arena die with it (they would keep it alive)
        st.buffers.clear()
        self._release()

    def __enter__(self) -> KVCachePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        st = self.stats() if not self._state.closed else None
        used = f"{st.used_blocks}/{self.num_blocks}" if st else "closed"
        return (
            f"KVCachePool(device={self.device!r}, dtype={self.kv_cache_dtype}, "
            f"block_size={self.block_size}, blocks={used})"
        )
