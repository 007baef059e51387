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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import (
    ForeignBlockError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
)
from ..protocol import DType
from .allocator import BlockAllocator
from .ids import as_id_list
from .swap import HostBufferCache, SwappedBlocks

if TYPE_CHECKING:
    from ..api.blocks import KVBlock
    from ..api.streams import Stream
    from .geometry import KVGeometry
    from .movers.base import BlockMover

__all__ = ["KVCachePool", "PoolHost", "PoolStats", "SwappedBlocks"]


class PoolHost(Protocol):
    """What a pool needs from its provider (``core.pools.PoolFactory`` implements it)."""

    @property
    def owner_id(self) -> int:
        """The provider's id."""

    def stream(self, stream: Stream | None) -> Stream | None:
        """Validate a stream argument."""

    def fault(self, what: str, count: int = 1) -> None:
        """Fault-injection hook."""

    def read(self, view: Any) -> bytes:
        """Bytes of a block view."""

    def write(self, view: Any, buf: memoryview) -> None:
        """Overwrite a block view."""

    def adopt(self, pool: KVCachePool, block_id: int, view: Any) -> KVBlock:
        """Register a KVBlock view of a pool block."""

    def released(self, device: str, nbytes: int) -> None:
        """The pool's arena is gone."""


@dataclass(frozen=True)
class PoolStats:
    """A snapshot of a pool's occupancy."""

    num_blocks: int
    free_blocks: int
    used_blocks: int
    peak_used_blocks: int
    shared_blocks: int
    block_nbytes: int
    arena_nbytes: int


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
    ) -> None:
        self._host = host
        self._arena: Any = arena
        self._mover = mover
        self.device = device
        self.dtype = dtype
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
    def arena(self) -> Any:
        """The arena (numpy array or torch tensor), shape ``(num_blocks, *block_shape)``."""
        self._check_open()
        return self._arena

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
            try:
                self._host.fault("alloc", len(ids))
            except BaseException:
                self._alloc.undo_allocate(ids, peak)
                raise
            return ids

    def free(self, ids: Sequence[int]) -> None:
        """Drop one reference per listed id; blocks at zero return to the free list.

        Args:
            ids: Block ids (list, tuple, numpy array or tensor).

        Raises:
            BlockFreedError: an id is free already or freed more often than referenced;
                nothing changed.
        """
        lst = ids if type(ids) is list else as_id_list(ids, "ids")
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
        with self._lock:
            self._alloc._check_ids([block_id])
            return self._alloc.refcount(block_id)

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
        lst = as_id_list(ids, "ids")
        self._check_open()
        if len(set(lst)) != len(lst):
            raise InvalidArgumentError("make_writable ids contain duplicates; pass each block once.")
        s = self._host.stream(stream)
        with self._lock:
            self._alloc.require_live(lst, "make_writable ids")
            shared = [i for i in lst if self._alloc.refcount(i) > 1]
            if not shared:
                return list(lst)
            peak = self._alloc.peak_used
            fresh = self._alloc.allocate(len(shared))
            try:
                self._host.fault("transfer")
                self._mover.copy_blocks(self._arena, shared, fresh, s)
            except BaseException:
                self._alloc.undo_allocate(fresh, peak)
                raise
            self._alloc.free(shared)
            mapping = dict(zip(shared, fresh))
        return [mapping.get(i, i) for i in lst]

    # ----------------------------------------------------------- data
    def _check_pairs(self, src: list[int], dst: list[int]) -> None:
        if len(src) != len(dst):
            raise InvalidArgumentError(f"src_ids and dst_ids must have the same length; got {len(src)} and {len(dst)}.")
        dst_set = set(dst)
        if len(dst_set) != len(dst):
            raise InvalidArgumentError(
                "dst_ids contain duplicates: two copies would write one block. Pass each destination once."
            )
        if not dst_set.isdisjoint(src):
            raise InvalidArgumentError(
                "dst_ids and src_ids overlap: a block may not be read and written in one batch "
                f"(e.g. {sorted(dst_set.intersection(src))[:4]}). Split the batch."
            )
        with self._lock:
            self._alloc.require_live(dst_set, "dst_ids")
            self._alloc.require_live(src, "src_ids")

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
        src: Any
        dst: Any
        if validate:
            src = as_id_list(src_ids, "src_ids")
            dst = as_id_list(dst_ids, "dst_ids")
            self._check_pairs(src, dst)
        else:  # trusted path: index tensors (even on the device) go straight to the kernel
            src = src_ids if hasattr(src_ids, "device") else as_id_list(src_ids, "src_ids")
            dst = dst_ids if hasattr(dst_ids, "device") else as_id_list(dst_ids, "dst_ids")
        if len(src) == 0:
            return
        s = self._host.stream(stream)
        self._host.fault("transfer")
        self._mover.copy_blocks(self._arena, src, dst, s)

    def swap_out(self, ids: Sequence[int], *, stream: Stream | None = None) -> SwappedBlocks:
        """Copy blocks to host memory (pinned on accelerators). The ids stay allocated:
        free them once the copy is done (``swapped.wait()``).

        Args:
            ids: Live block ids.
            stream: Enqueue on this stream; ``swapped.event`` marks completion.

        Returns:
            The host copy.
        """
        from ..device import Device

        lst = as_id_list(ids, "ids")
        self._check_open()
        with self._lock:
            self._alloc.require_live(lst, "swap_out ids")
        s = self._host.stream(stream)
        self._host.fault("transfer")
        out = self._host_buffers.take((len(lst), *tuple(self._arena.shape[1:])))
        rows = self._mover.gather(self._arena, lst, Device("cpu"), s, out=out)
        return SwappedBlocks(self, rows, lst, self._mover.record(s))

    def clear_host_cache(self) -> None:
        """Drop recycled host swap buffers."""
        self._host_buffers.clear()

    def swap_in(
        self, swapped: SwappedBlocks, dst_ids: Sequence[int] | None = None, *, stream: Stream | None = None
    ) -> list[int]:
        """Copy swapped-out blocks back into the pool.

        Args:
            swapped: From :meth:`swap_out` of this pool.
            dst_ids: Live destination ids, or ``None`` to allocate new ones (atomically).
            stream: Enqueue on this stream.

        Returns:
            The destination ids.
        """
        if not isinstance(swapped, SwappedBlocks):
            raise InvalidArgumentTypeError(
                f"swap_in needs the SwappedBlocks from swap_out(); got {type(swapped).__name__}."
            )
        if swapped.pool is not self:
            raise ForeignBlockError("these blocks were swapped out of another pool; swap them in there.")
        self._check_open()
        s = self._host.stream(stream)
        if dst_ids is None:
            dst = self.allocate(swapped.num_blocks)
            fresh = True
        else:
            dst = as_id_list(dst_ids, "dst_ids")
            fresh = False
            if len(dst) != swapped.num_blocks:
                raise InvalidArgumentError(f"swap_in got {len(dst)} dst_ids for {swapped.num_blocks} swapped blocks.")
            if len(set(dst)) != len(dst):
                raise InvalidArgumentError("swap_in dst_ids contain duplicates.")
            with self._lock:
                self._alloc.require_live(dst, "swap_in dst_ids")
        try:
            if swapped.event is not None and s is not None:
                s.wait_event(swapped.event)
            elif swapped.event is not None:
                swapped.wait()
            self._host.fault("transfer")
            self._mover.scatter(self._arena, dst, swapped.data, s)
        except BaseException:
            if fresh:
                self.free(dst)
            raise
        return dst

    def migrate_blocks(self, ids: Sequence[int], target: KVCachePool, *, stream: Stream | None = None) -> list[int]:
        """Copy blocks into another pool of the same provider (another device), batched.

        The source ids stay allocated; free them when done. New ids in ``target`` are allocated
        atomically.

        Args:
            ids: Live block ids here.
            target: A pool of the same provider, same dtype and block size.
            stream: Enqueue on this stream.

        Returns:
            The new ids in ``target``.
        """
        from ..device import normalize_device

        if not isinstance(target, KVCachePool):
            raise InvalidArgumentTypeError(f"target must be a KVCachePool; got {type(target).__name__}.")
        if target._host is not self._host:
            raise ForeignBlockError(
                "target pool belongs to another provider instance; create it with this "
                "provider's create_kv_pool(device=...)."
            )
        if (target.dtype, target.block_size) != (self.dtype, self.block_size):
            raise InvalidArgumentError(
                f"target pool holds {target.block_size}-token {target.dtype.value} blocks, this one "
                f"{self.block_size}-token {self.dtype.value}; they must match."
            )
        lst = as_id_list(ids, "ids")
        self._check_open()
        target._check_open()
        with self._lock:
            self._alloc.require_live(lst, "migrate ids")
        s = self._host.stream(stream)
        self._host.fault("transfer")
        dst = target.allocate(len(lst))
        try:
            if target is self:
                self._mover.copy_blocks(self._arena, lst, dst, s)
            else:
                rows = self._mover.gather(self._arena, lst, normalize_device(target.device), s)
                target._mover.scatter(target._arena, dst, rows, s)
        except BaseException:
            target.free(dst)
            raise
        return dst

    def block(self, block_id: int) -> KVBlock:
        """A :class:`KVBlock` view of a pool block, usable with the seed's single-block API.

        The view holds one reference: ``provider.kv_block_free(view)`` drops it;
        ``kv_block_copy`` / ``kv_block_read`` / ``kv_block_write`` act on the pool's memory;
        ``kv_block_migrate(view, dev)`` copies it out into a standalone block on ``dev``.

        Args:
            block_id: A live block id.

        Returns:
            The view.
        """
        self._check_open()
        with self._lock:
            self._alloc.require_live([block_id], "block_id")
            self._alloc.fork([block_id])
        return self._host.adopt(self, block_id, self._mover.view(self._arena, block_id))

    def read_block(self, block_id: int) -> bytes:
        """Bytes of one block.

        Args:
            block_id: A live block id.

        Returns:
            ``block_nbytes`` bytes.
        """
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
        self._check_open()
        with self._lock:
            self._alloc.require_live([block_id], "block_id")
        buf = memoryview(data).cast("B")
        if buf.nbytes != self.block_nbytes:
            raise InvalidArgumentError(f"data has {buf.nbytes} bytes; a block of this pool holds {self.block_nbytes}.")
        self._host.write(self._mover.view(self._arena, block_id), buf)

    # -------------------------------------------------------- lifecycle
    def _check_open(self) -> None:
        if self._closed:
            raise InvalidArgumentError("this KV pool was closed; create a new one with create_kv_pool().")

    def close(self) -> None:
        """Release the arena (its bytes leave ``memory_stats``). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._mover.forget(self._arena)
            self._arena = None
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
            f"KVCachePool(device={self.device!r}, dtype={self.dtype.value}, "
            f"block_size={self.block_size}, blocks={used})"
        )
