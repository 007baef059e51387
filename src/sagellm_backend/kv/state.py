"""The working parts of one pool: its id allocator, lock, arena, block mover and host, with the
checks every pool operation shares. :class:`~sagellm_backend.kv.pool.KVCachePool` owns one and
hands it to the copy bodies of :mod:`.transfer`; nothing else reaches the parts."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from ..core.validate import check_count
from ..errors import InvalidArgumentError
from .allocator import BlockAllocator
from .swap import HostBufferCache

if TYPE_CHECKING:
    from ..api.streams import Stream
    from .host import PoolHost
    from .mover import BlockMover

__all__ = ["PoolState"]


class PoolState:
    """Allocator, lock, arena, mover and host of one pool.

    Args:
        host: What the pool may ask of its provider.
        arena: The arena (numpy array or torch tensor).
        mover: The storage's block mover.
        num_blocks: Blocks in the arena.
    """

    def __init__(self, host: PoolHost, arena: Any, mover: BlockMover, num_blocks: int) -> None:
        self.host = host
        self.faults = host.faults
        self.arena: Any = arena
        self.mover = mover
        self.alloc = BlockAllocator(num_blocks)
        self.lock = threading.Lock()
        self.closed = False
        self.buffers = HostBufferCache()

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
        count = check_count("pool.allocate(n): n", n, minimum=0)
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
