"""The working parts of one pool and what it may ask of its provider.

:class:`PoolState` holds a pool's id allocator, lock, arena, block mover and :class:`PoolHooks`,
with the checks every pool operation shares; :class:`~sagellm_backend.kv.pool.KVCachePool` owns
one. The copies that also change ownership (copy-on-write, swap out to host, swap in, migrate to
another pool) work on it here, after the pool has checked its own arguments; nothing else reaches
the parts.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..core.validate import check_count
from ..device import Device
from ..errors import InvalidArgumentError
from .allocator import BlockAllocator
from .ids import as_id_list
from .swap import HostBufferCache

if TYPE_CHECKING:
    from ..api.streams import Event, Stream
    from .mover import BlockMover
    from .swap import SwappedBlocks

__all__ = ["PoolHooks", "PoolState", "PoolStats"]


class PoolHooks(Protocol):
    """What a pool's working parts ask of its provider: streams and fault injection (the pool's
    :class:`~sagellm_backend.kv.pool.PoolHost` has them)."""

    def stream(self, stream: Stream | None) -> Stream | None:
        """Validate a stream argument."""

    @property
    def faults(self) -> Any:
        """The provider's fault injection (with an ``armed`` flag), or ``None``; hot paths skip
        :meth:`fault` unless it is armed."""

    def fault(self, what: str, count: int = 1) -> None:
        """Fault-injection hook."""


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


class PoolState:
    """Allocator, lock, arena, mover and host of one pool.

    Args:
        host: What the pool may ask of its provider.
        arena: The arena (numpy array or torch tensor).
        mover: The storage's block mover.
        num_blocks: Blocks in the arena.
    """

    def __init__(self, host: PoolHooks, arena: Any, mover: BlockMover, num_blocks: int) -> None:
        self.host = host
        self.faults = host.faults
        self.arena: Any = arena
        self.mover = mover
        self.alloc = BlockAllocator(num_blocks)
        self.lock = threading.Lock()
        self.closed = False
        self.buffers = HostBufferCache()

    def stats(self, block_nbytes: int) -> PoolStats:
        """Occupancy snapshot, taken under the lock.

        Args:
            block_nbytes: Bytes per block.

        Returns:
            The snapshot.
        """
        with self.lock:
            n, free = self.alloc.num_blocks, self.alloc.num_free
            return PoolStats(
                n, free, n - free, self.alloc.peak_used, self.alloc.num_shared, block_nbytes, n * block_nbytes
            )

    def check_open(self) -> None:
        """Raise unless the pool is open.

        Raises:
            InvalidArgumentError: the pool was closed.
        """
        if self.closed:
            raise InvalidArgumentError("this KV pool was closed; create a new one with create_kv_pool().")

    def stream(self, stream: Stream | None) -> Stream | None:
        """The stream to enqueue on, after the ``"transfer"`` fault hook.

        Args:
            stream: What the caller passed.

        Returns:
            The stream, or ``None`` for synchronous.
        """
        s = self.host.stream(stream)
        self.host.fault("transfer")
        return s

    def require_live(self, ids: list[int], what: str) -> None:
        """Check under the lock that every id is allocated.

        Args:
            ids: Block ids.
            what: The argument's name, for messages.
        """
        with self.lock:
            self.alloc.require_live(ids, what)

    def take(self, n: object) -> tuple[list[int], int]:
        """Allocate ``n`` blocks atomically, returning them and the peak before, for :meth:`give_back`.

        Args:
            n: Number of blocks (>= 0).

        Returns:
            ``(ids, peak)``.

        Raises:
            InvalidArgumentTypeError: ``n`` is not an int.
            InvalidArgumentError: ``n`` is negative, or the pool is closed.
            ResourceExhaustedError: not enough free blocks; nothing allocated.
        """
        count = n if type(n) is int and n >= 0 else check_count("pool.allocate(n): n", n, minimum=0)
        if self.closed:
            self.check_open()
        with self.lock:
            peak = self.alloc.peak_used
            ids = self.alloc.allocate(count)
            faults = self.faults
            if faults is not None and faults.armed:
                try:
                    self.host.fault("alloc", len(ids))
                except BaseException:
                    self.alloc.undo_allocate(ids, peak)
                    raise
            return ids, peak

    def give_back(self, ids: list[int], peak: int) -> None:
        """Undo :meth:`take` exactly (free list order and peak), for an operation that failed.

        Args:
            ids: The ids :meth:`take` returned.
            peak: The peak it returned.
        """
        with self.lock:
            self.alloc.undo_allocate(ids, peak)

    # ------------------------------------------- copies that change ownership
    def make_writable(self, ids: Sequence[int], *, stream: Stream | None = None) -> list[int]:
        """Copy-on-write; arguments as :meth:`~sagellm_backend.kv.pool.KVCachePool.make_writable`."""
        lst = as_id_list(ids, "ids")
        self.check_open()
        if len(set(lst)) != len(lst):
            raise InvalidArgumentError("make_writable ids contain duplicates; pass each block once.")
        s = self.host.stream(stream)
        with self.lock:
            self.alloc.require_live(lst, "make_writable ids")
            shared = [i for i in lst if self.alloc.refcount(i) > 1]
            if not shared:
                return list(lst)
            self.alloc.require_droppable(shared, "make_writable")
            peak = self.alloc.peak_used
            fresh = self.alloc.allocate(len(shared))
            try:
                self.host.fault("transfer")
                self.mover.copy_blocks(self.arena, shared, fresh, s)
            except BaseException:
                self.alloc.undo_allocate(fresh, peak)
                raise
            self.alloc.free(shared)
            mapping = dict(zip(shared, fresh))
        return [mapping.get(i, i) for i in lst]

    def swap_out(self, ids: Sequence[int], *, stream: Stream | None = None) -> tuple[Any, list[int], Event | None]:
        """Copy blocks to host memory; arguments as :meth:`~sagellm_backend.kv.pool.KVCachePool.swap_out`.

        Returns:
            ``(rows, ids, event)``: the host rows, the ids as a list, the event after the copy.
        """
        lst = as_id_list(ids, "ids")
        self.check_open()
        self.require_live(lst, "swap_out ids")
        s = self.stream(stream)
        out = self.buffers.take((len(lst), *tuple(self.arena.shape[1:])))
        rows = self.mover.gather(self.arena, lst, Device("cpu"), s, out=out)
        return rows, lst, self.mover.record(s)

    def swap_in(self, swapped: SwappedBlocks, dst_ids: Sequence[int] | None, *, stream: Stream | None) -> list[int]:
        """Copy swapped-out blocks (already checked to be this pool's, unreleased) back into the pool;
        arguments as :meth:`~sagellm_backend.kv.pool.KVCachePool.swap_in`."""
        n = swapped.num_blocks
        self.check_open()
        s = self.host.stream(stream)
        fresh: tuple[list[int], int] | None = None
        if dst_ids is None:
            fresh = self.take(n)
            dst = fresh[0]
        else:
            dst = as_id_list(dst_ids, "dst_ids")
            if len(dst) != n:
                raise InvalidArgumentError(f"swap_in got {len(dst)} dst_ids for {n} swapped blocks.")
            if len(set(dst)) != len(dst):
                raise InvalidArgumentError("swap_in dst_ids contain duplicates.")
            self.require_live(dst, "swap_in dst_ids")
        try:
            if swapped.event is not None and s is not None:
                s.wait_event(swapped.event)
            elif swapped.event is not None:
                swapped.wait()
            self.host.fault("transfer")
            self.mover.scatter(self.arena, dst, swapped.data, s)
            swapped.read_by(self.mover.record(s))  # its host buffer is not reused before this copy read it
        except BaseException:
            if fresh is not None:
                self.give_back(*fresh)
            raise
        return dst

    def migrate_blocks(
        self, ids: Sequence[int], target: PoolState, target_device: Device, *, stream: Stream | None = None
    ) -> list[int]:
        """Copy blocks into another pool of the same provider (already checked to match).

        Args:
            ids: Live block ids here.
            target: The target pool's parts (may be ``self``).
            target_device: The target pool's device.
            stream: Stream to enqueue on.

        Returns:
            The new ids in the target.
        """
        lst = as_id_list(ids, "ids")
        self.check_open()
        target.check_open()
        self.require_live(lst, "migrate ids")
        s = self.stream(stream)
        dst, peak = target.take(len(lst))
        try:
            if target is self:
                self.mover.copy_blocks(self.arena, lst, dst, s)
            else:
                rows = self.mover.gather(self.arena, lst, target_device, s)
                target.mover.scatter(target.arena, dst, rows, s)
        except BaseException:
            target.give_back(dst, peak)
            raise
        return dst
