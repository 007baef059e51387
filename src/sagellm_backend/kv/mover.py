"""The interface of block movers: batched copies within an arena and to/from other devices."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..api.streams import Event, Stream
    from ..device import Device

__all__ = ["BlockMover"]


class BlockMover(ABC):
    """Batched data movement over one storage kind's arenas."""

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

    def forget(self, arena: Any) -> None:  # noqa: B027 (optional: movers without caches)
        """Drop anything cached about ``arena`` (its pool is releasing it).

        Args:
            arena: The arena.
        """
