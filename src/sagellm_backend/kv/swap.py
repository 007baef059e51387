"""Host copies of swapped-out blocks, and the recycling of their buffers."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from ..core.validate import Deadline
from ..errors import StreamError

if TYPE_CHECKING:
    from ..api.streams import Event

__all__ = ["HostBufferCache", "SwappedBlocks"]


class HostBufferCache:
    """Recycles host swap buffers: fresh host memory costs a page fault per 4 KiB on first touch,
    which made swap-out several times slower than the copy itself. Bounded; emptied by the
    provider's ``clear_cache()``."""

    def __init__(self, keep: int = 2) -> None:
        self.keep = keep
        self._lock = threading.Lock()
        self._free: dict[tuple[int, ...], list[tuple[Any, tuple[Event, ...]]]] = {}

    def take(self, shape: tuple[int, ...]) -> Any:
        """A recycled buffer of ``shape`` whose last copy has finished, or ``None``.

        Args:
            shape: The buffer shape.

        Returns:
            The buffer, or ``None`` (allocate a fresh one).
        """
        with self._lock:
            bucket = self._free.get(shape) or []
            for k, (buf, ready) in enumerate(bucket):
                if all(e.query() for e in ready):  # never block: a busy buffer is skipped
                    del bucket[k]
                    return buf
            return None

    def give(self, shape: tuple[int, ...], buf: Any, ready: tuple[Event, ...] = ()) -> None:
        """Return a buffer for reuse once every event of ``ready`` (after each copy into or out of it) completed.

        Args:
            shape: The buffer shape.
            buf: The buffer.
            ready: Events after the copies that use it; empty when it is idle.
        """
        with self._lock:
            bucket = self._free.setdefault(shape, [])
            if len(bucket) < self.keep:
                bucket.append((buf, ready))

    def clear(self) -> None:
        with self._lock:
            self._free.clear()


class SwappedBlocks:
    """Blocks copied out to host memory by :meth:`KVCachePool.swap_out`.

    :meth:`release` gives the host buffer back to the pool for the next swap-out; after that
    ``data`` is ``None`` and the object cannot be swapped in. A dropped object is never recycled
    (its ``data`` may still be referenced elsewhere), so its buffer is simply freed.

    Args:
        pool: The pool the blocks were copied from (only its identity is used).
        data: The host rows.
        block_ids: Their pool ids.
        event: The copy's event, or ``None``.
        block_nbytes: Bytes of one block.
        buffers: Where :meth:`release` returns ``data`` for reuse.

    Attributes:
        pool: The pool the blocks were copied from.
        data: Host rows ``(num_blocks, *block_shape)`` (pinned on accelerators).
        block_ids: The pool ids they were copied from, in order.
        event: Recorded after the copy when it ran on a stream, else ``None``.
    """

    def __init__(
        self,
        pool: object,
        data: Any,
        block_ids: list[int],
        event: Event | None,
        *,
        block_nbytes: int,
        buffers: HostBufferCache,
    ) -> None:
        self.pool = pool
        self.data = data
        self.block_ids = list(block_ids)
        self.event = event
        self._readers: list[Event] = []  # events after the swap-ins that read ``data`` on a stream
        self._block_nbytes = block_nbytes
        self._buffers = buffers
        self._lock = threading.Lock()

    @property
    def released(self) -> bool:
        """True once :meth:`release` gave the buffer back."""
        return self.data is None

    def release(self) -> None:
        """Give the host buffer back for reuse (``data`` must not be used afterwards). Idempotent.

        Does not wait: the buffer is reused only once the swap-out copy and every swap-in that reads it
        on a stream have finished. A copy that failed is not reported here (nothing will read the
        buffer); :meth:`wait` and the stream's ``synchronize`` report it.
        """
        with self._lock:
            data, self.data = self.data, None
            readers, self._readers = tuple(self._readers), []
        if data is not None:
            self._buffers.give(tuple(data.shape), data, (*(() if self.event is None else (self.event,)), *readers))

    def read_by(self, event: Event | None) -> None:
        """Note a copy out of ``data`` (a swap-in on a stream) that a released buffer must outlive.

        Args:
            event: Event after the copy, or ``None`` when it ran synchronously.
        """
        if event is not None:
            with self._lock:
                self._readers.append(event)

    @property
    def num_blocks(self) -> int:
        """How many blocks are held."""
        return len(self.block_ids)

    @property
    def nbytes(self) -> int:
        """Bytes held in host memory."""
        return len(self.block_ids) * self._block_nbytes

    def wait(self, *, timeout: float | None = None) -> None:
        """Block until the swap-out copy has finished.

        Args:
            timeout: Seconds to wait at most (finite, > 0); ``None`` waits until the copy finishes.

        Raises:
            StreamError: The copy failed, or was skipped because earlier work on its stream failed:
                ``data`` holds stale bytes and the source blocks hold the only copy (do not free
                them). Chained from the original exception.
            StreamTimeoutError: The copy did not finish within ``timeout``.
            InvalidArgumentError: ``timeout`` is not finite and positive (``InvalidArgumentTypeError``
                when it is not a number).
        """
        if self.event is None:
            Deadline(timeout)  # validated on every path
            return
        try:
            self.event.synchronize(timeout=timeout)
        except StreamError as exc:
            raise StreamError(
                f"swap_out of {self.num_blocks} blocks did not complete, so its host copy holds stale bytes; "
                f"keep the source blocks. {exc.message}",
                **exc.details,
            ) from exc.__cause__

    def __repr__(self) -> str:
        return f"SwappedBlocks(num_blocks={self.num_blocks}, nbytes={self.nbytes})"
