"""Paged KV-cache pool: one preallocated arena per device, O(1) block ids, reference counts.

Arena layout (block-major, so every block is one contiguous run of bytes)::

    arena.shape == (num_blocks, kv_factor, num_layers, block_size, num_kv_heads, head_dim')

``head_dim'`` is ``head_dim`` (``head_dim // 2`` bytes for packed int4). Block ``i`` is
``arena[i]``, exactly the storage of a :class:`~sagellm_backend.contract.KVBlock` of
``block_size`` tokens, so the seed's single-block API works on pool blocks (:meth:`KVCachePool.block`).

Block ids are plain ``int`` in ``[0, num_blocks)``. The allocator keeps a LIFO free list, the set
of ids referenced once, and a map of shared ids to their counts, so allocating or freeing a batch
costs a few C-level list/set operations, not Python work per block; reference counts are only
touched per block when blocks are actually shared (fork / copy-on-write).

Every batch operation is atomic: it validates first and raises before changing anything.
"""

from __future__ import annotations

import threading
import weakref
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import (
    BlockFreedError,
    ForeignBlockError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    ResourceExhaustedError,
)
from ..protocol import DType

if TYPE_CHECKING:
    from ..contract import Event, KVBlock, Stream
    from ..device import Device
    from ..providers._core import ProviderCore

__all__ = ["ArenaOps", "BlockAllocator", "KVCachePool", "PoolStats", "SwappedBlocks"]


def _as_id_list(ids: object, what: str) -> list[int]:
    """Accept a list/tuple/range/numpy array/torch tensor of ints; return a list of ``int``."""
    if isinstance(ids, list):
        return ids
    if isinstance(ids, (tuple, range)):
        return list(ids)
    tolist = getattr(ids, "tolist", None)
    if tolist is not None:
        out = tolist()
        if isinstance(out, list):
            return out
    if isinstance(ids, Iterable) and not isinstance(ids, (str, bytes)):
        return list(ids)
    raise InvalidArgumentTypeError(
        f"{what} must be a sequence of block ids (list, tuple, numpy array, tensor); got {type(ids).__name__}."
    )


class BlockAllocator:
    """Block-id allocator with reference counts. Not thread-safe by itself (the pool locks).

    State: a LIFO free list, the set of ids referenced exactly once (``_single``), and a map of
    shared ids to their reference count (``_shared``, counts >= 2). An id is in exactly one of
    the three. Allocating and freeing unshared blocks, the hot path, are a few C-level list and
    set operations per batch; only fork / shared frees touch ids one by one.

    Args:
        num_blocks: Ids ``0 .. num_blocks-1`` are managed.
    """

    def __init__(self, num_blocks: int) -> None:
        self.num_blocks = num_blocks
        self._free: list[int] = list(range(num_blocks - 1, -1, -1))
        self._single: set[int] = set()
        self._shared: dict[int, int] = {}
        self.peak_used = 0

    @property
    def num_free(self) -> int:
        """Blocks not referenced by anyone."""
        return len(self._free)

    @property
    def num_shared(self) -> int:
        """Blocks with a reference count of two or more."""
        return len(self._shared)

    def allocate(self, n: int) -> list[int]:
        """Take ``n`` free blocks (reference count 1 each), all or nothing.

        Args:
            n: Number of blocks (>= 0).

        Returns:
            The ids, lowest first on a fresh allocator.

        Raises:
            ResourceExhaustedError: fewer than ``n`` free; nothing taken.
        """
        free = self._free
        if n > len(free):
            raise ResourceExhaustedError(
                f"cannot allocate {n} KV blocks: only {len(free)} of {self.num_blocks} are free. "
                "Free or swap out blocks, or create a larger pool.",
                requested=n,
                free=len(free),
            )
        if n == 0:
            return []
        ids = free[-n:]
        del free[-n:]
        ids.reverse()
        self._single.update(ids)
        used = self.num_blocks - len(free)
        if used > self.peak_used:
            self.peak_used = used
        return ids

    def undo_allocate(self, ids: list[int], peak_before: int) -> None:
        """Return freshly allocated ``ids`` exactly as they were taken (for rollback).

        Args:
            ids: What :meth:`allocate` returned.
            peak_before: ``peak_used`` before that call.
        """
        self._single.difference_update(ids)
        self._free.extend(reversed(ids))
        self.peak_used = peak_before

    def free(self, ids: list[int]) -> list[int]:
        """Drop one reference per occurrence of each id; ids reaching zero become free.

        Args:
            ids: Block ids (duplicates drop several references).

        Returns:
            The ids that became free, in order.

        Raises:
            InvalidArgumentError / BlockFreedError: an id out of range, not allocated, or freed
                more times than it is referenced; nothing changed.
        """
        # Fast path, no temporary set: every id referenced once, no duplicates (a duplicate
        # makes difference_update remove fewer ids than listed; we then undo and go slow).
        single = self._single
        if single.issuperset(ids):
            before = len(single)
            single.difference_update(ids)
            if before - len(single) == len(ids):
                self._free.extend(ids)
                return ids
            single.update(ids)
        return self._free_slow(ids)

    def _check_ids(self, ids: Iterable[object]) -> None:
        for i in ids:
            if isinstance(i, bool) or not isinstance(i, int):
                raise InvalidArgumentTypeError(f"block ids must be ints; got {type(i).__name__} {i!r}.")
            if not 0 <= i < self.num_blocks:
                raise InvalidArgumentError(
                    f"block id {i} is out of range: this pool has ids 0..{self.num_blocks - 1}.",
                    block_id=i,
                )

    def _free_slow(self, ids: list[int]) -> list[int]:
        counts = Counter(ids)
        self._check_ids(counts)
        for i, c in counts.items():
            rc = self.refcount(i)
            if c > rc:
                raise BlockFreedError(
                    f"block {i} is freed {c} time(s) but holds {rc} reference(s)"
                    + (" (it is already free)" if rc == 0 else "")
                    + ". Free each reference once; nothing was freed.",
                    block_id=i,
                )
        released: list[int] = []
        for i, c in counts.items():
            self._set_refcount(i, self.refcount(i) - c)
            if i not in self._single and i not in self._shared:
                released.append(i)
        self._free.extend(released)
        return released

    def _set_refcount(self, i: int, rc: int) -> None:
        """Move ``i`` to the container its new count belongs in (0: caller frees it)."""
        self._single.discard(i)
        self._shared.pop(i, None)
        if rc == 1:
            self._single.add(i)
        elif rc >= 2:
            self._shared[i] = rc

    def fork(self, ids: list[int]) -> None:
        """Add one reference to each id (prefix sharing); an id listed twice gains two.

        Args:
            ids: Live block ids.

        Raises:
            BlockFreedError: an id is not allocated; nothing changed.
        """
        self.require_live(ids, "fork ids")
        single, shared = self._single, self._shared
        for i in ids:
            if i in single:
                single.remove(i)
                shared[i] = 2
            else:
                shared[i] += 1

    def refcount(self, block_id: int) -> int:
        """References held on ``block_id`` (0 when free).

        Args:
            block_id: A block id.

        Returns:
            The reference count.
        """
        if block_id in self._single:
            return 1
        return self._shared.get(block_id, 0)

    def require_live(self, ids: Iterable[int], what: str) -> None:
        """Raise unless every id is allocated.

        Args:
            ids: Block ids.
            what: Argument name for the message.

        Raises:
            BlockFreedError / InvalidArgumentError / InvalidArgumentTypeError.
        """
        if self._single.issuperset(ids):
            return
        st = ids if isinstance(ids, (set, frozenset)) else set(ids)
        rest = st.difference(self._single)
        if rest <= self._shared.keys():
            return
        self._check_ids(rest)
        dead = sorted(i for i in rest if i not in self._shared)
        raise BlockFreedError(
            f"{what} names blocks that are not allocated: {dead[:8]}"
            f"{' ...' if len(dead) > 8 else ''}. Allocate them first.",
            block_ids=dead,
        )


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


class ArenaOps(ABC):
    """Batched data movement over one provider's arenas. Implemented per storage kind."""

    @abstractmethod
    def view(self, arena: Any, block_id: int) -> Any:
        """The storage of one block (a view, not a copy)."""

    @abstractmethod
    def copy_blocks(self, arena: Any, src: list[int], dst: list[int], stream: Stream | None) -> None:
        """``arena[dst[k]] = arena[src[k]]`` for every k, in one batched operation."""

    @abstractmethod
    def gather(self, arena: Any, ids: list[int], device: Device, stream: Stream | None, out: Any = None) -> Any:
        """Contiguous rows ``(len(ids), *block_shape)`` holding those blocks, on ``device``
        (pinned host memory when ``device`` is cpu and the arena is on an accelerator).
        ``out``: a buffer of that shape to fill instead of allocating one."""

    @abstractmethod
    def scatter(self, arena: Any, ids: list[int], rows: Any, stream: Stream | None) -> None:
        """``arena[ids[k]] = rows[k]``; ``rows`` may live on another device."""

    def record(self, stream: Stream | None) -> Event | None:
        """An event marking the work just enqueued on ``stream`` (``None`` when synchronous)."""
        return stream.record_event() if stream is not None else None


class _HostBufferCache:
    """Recycles host swap buffers: fresh host memory costs a page fault per 4 KiB on first touch,
    which made swap-out several times slower than the copy itself. Bounded; emptied by the
    provider's ``clear_cache()``."""

    def __init__(self, keep: int = 2) -> None:
        self.keep = keep
        self._lock = threading.Lock()
        self._free: dict[tuple[int, ...], list[Any]] = {}

    def take(self, shape: tuple[int, ...]) -> Any:
        with self._lock:
            bucket = self._free.get(shape)
            return bucket.pop() if bucket else None

    def give(self, shape: tuple[int, ...], buf: Any) -> None:
        with self._lock:
            bucket = self._free.setdefault(shape, [])
            if len(bucket) < self.keep:
                bucket.append(buf)

    def clear(self) -> None:
        with self._lock:
            self._free.clear()


class SwappedBlocks:
    """Blocks copied out to host memory by :meth:`KVCachePool.swap_out`.

    When this object is dropped (or :meth:`release` is called) its host buffer goes back to the
    pool for the next swap-out.

    Attributes:
        data: Host rows ``(num_blocks, *block_shape)`` (pinned on accelerators).
        block_ids: The pool ids they were copied from, in order.
        event: Recorded after the copy when it ran on a stream, else ``None``.
    """

    def __init__(self, pool: KVCachePool, data: Any, block_ids: list[int], event: Event | None) -> None:
        self.pool = pool
        self.data = data
        self.block_ids = list(block_ids)
        self.event = event
        self._finalizer = weakref.finalize(self, pool._host_buffers.give, tuple(data.shape), data)

    def release(self) -> None:
        """Give the host buffer back now (``data`` must not be used afterwards)."""
        self.wait()
        self._finalizer()
        self.data = None

    @property
    def num_blocks(self) -> int:
        """How many blocks are held."""
        return len(self.block_ids)

    @property
    def nbytes(self) -> int:
        """Bytes held in host memory."""
        return len(self.block_ids) * self.pool.block_nbytes

    def wait(self) -> None:
        """Block until the swap-out copy has finished."""
        if self.event is not None:
            self.event.synchronize()

    def __repr__(self) -> str:
        return f"SwappedBlocks(num_blocks={self.num_blocks}, nbytes={self.nbytes})"


class KVCachePool:
    """A paged KV cache on one device. Create it with ``provider.create_kv_pool(...)``.

    Thread-safe: every allocator operation holds the pool's lock.
    """

    def __init__(
        self,
        provider: ProviderCore,
        arena: Any,
        *,
        device: str,
        dtype: DType,
        block_size: int,
        num_blocks: int,
        block_nbytes: int,
        ops: ArenaOps,
    ) -> None:
        self._provider = provider
        self._arena: Any = arena
        self._ops = ops
        self.device = device
        self.dtype = dtype
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.block_nbytes = block_nbytes
        self._alloc = BlockAllocator(num_blocks)
        self._lock = threading.Lock()
        self._closed = False
        self._host_buffers = _HostBufferCache()
        #: Fault-injection hook (Mock): called with the ids of a batch before it is handed out.
        self.allocation_hook: Callable[[list[int]], None] | None = None

    # ------------------------------------------------------------- facts
    @property
    def provider(self) -> ProviderCore:
        """The provider that owns this pool."""
        return self._provider

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
            hook = self.allocation_hook
            if hook is not None:
                try:
                    hook(ids)
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
        lst = ids if type(ids) is list else _as_id_list(ids, "ids")
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
        lst = _as_id_list(ids, "ids")
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
        lst = _as_id_list(ids, "ids")
        self._check_open()
        if len(set(lst)) != len(lst):
            raise InvalidArgumentError("make_writable ids contain duplicates; pass each block once.")
        s = self._provider._stream_for(stream)
        with self._lock:
            self._alloc.require_live(lst, "make_writable ids")
            shared = [i for i in lst if self._alloc.refcount(i) > 1]
            if not shared:
                return list(lst)
            peak = self._alloc.peak_used
            fresh = self._alloc.allocate(len(shared))
            try:
                self._provider._fault_check("transfer")
                self._ops.copy_blocks(self._arena, shared, fresh, s)
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
        if validate:
            src = _as_id_list(src_ids, "src_ids")
            dst = _as_id_list(dst_ids, "dst_ids")
            self._check_pairs(src, dst)
        else:  # trusted path: index tensors (even on the device) go straight to the kernel
            src = src_ids if hasattr(src_ids, "device") else _as_id_list(src_ids, "src_ids")  # type: ignore[assignment]
            dst = dst_ids if hasattr(dst_ids, "device") else _as_id_list(dst_ids, "dst_ids")  # type: ignore[assignment]
        if len(src) == 0:
            return
        s = self._provider._stream_for(stream)
        self._provider._fault_check("transfer")
        self._ops.copy_blocks(self._arena, src, dst, s)

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

        lst = _as_id_list(ids, "ids")
        self._check_open()
        with self._lock:
            self._alloc.require_live(lst, "swap_out ids")
        s = self._provider._stream_for(stream)
        self._provider._fault_check("transfer")
        out = self._host_buffers.take((len(lst), *tuple(self._arena.shape[1:])))
        rows = self._ops.gather(self._arena, lst, Device("cpu"), s, out=out)
        return SwappedBlocks(self, rows, lst, self._ops.record(s))

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
        s = self._provider._stream_for(stream)
        if dst_ids is None:
            dst = self.allocate(swapped.num_blocks)
            fresh = True
        else:
            dst = _as_id_list(dst_ids, "dst_ids")
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
            self._provider._fault_check("transfer")
            self._ops.scatter(self._arena, dst, swapped.data, s)
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
        if target._provider is not self._provider:
            raise ForeignBlockError(
                "target pool belongs to another provider instance; create it with this "
                "provider's create_kv_pool(device=...)."
            )
        if (target.dtype, target.block_size) != (self.dtype, self.block_size):
            raise InvalidArgumentError(
                f"target pool holds {target.block_size}-token {target.dtype.value} blocks, this one "
                f"{self.block_size}-token {self.dtype.value}; they must match."
            )
        lst = _as_id_list(ids, "ids")
        self._check_open()
        target._check_open()
        with self._lock:
            self._alloc.require_live(lst, "migrate ids")
        s = self._provider._stream_for(stream)
        self._provider._fault_check("transfer")
        dst = target.allocate(len(lst))
        try:
            if target is self:
                self._ops.copy_blocks(self._arena, lst, dst, s)
            else:
                rows = self._ops.gather(self._arena, lst, normalize_device(target.device), s)
                target._ops.scatter(target._arena, dst, rows, s)
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
        return self._provider._pool_block(self, block_id, self._ops.view(self._arena, block_id))

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
        return self._provider._storage_read(self._ops.view(self._arena, block_id))

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
        self._provider._storage_write(self._ops.view(self._arena, block_id), buf)

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
            self._arena = None
        self._host_buffers.clear()
        self._provider._pool_closed(self, self.arena_nbytes)

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
