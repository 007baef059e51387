"""What a pool needs from its provider, and the pool's occupancy snapshot."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..api.blocks import BlockSource, KVBlock
    from ..api.streams import Stream

__all__ = ["PoolHost", "PoolStats"]


class PoolHost(Protocol):
    """What a pool needs from its provider (``core.pools.PoolFactory`` implements it)."""

    @property
    def owner_id(self) -> int:
        """The provider's id."""

    def stream(self, stream: Stream | None) -> Stream | None:
        """Validate a stream argument."""

    @property
    def faults(self) -> Any:
        """The provider's fault injection (with an ``armed`` flag), or ``None``; hot paths skip
        :meth:`fault` unless it is armed."""

    def fault(self, what: str, count: int = 1) -> None:
        """Fault-injection hook."""

    def read(self, view: Any) -> bytes:
        """Bytes of a block view."""

    def write(self, view: Any, buf: memoryview) -> None:
        """Overwrite a block view."""

    def adopt(self, pool: BlockSource, block_id: int, view: Any) -> KVBlock:
        """Register a KVBlock view of a pool block."""

    def released(self, device: str, nbytes: int) -> None:
        """The pool's arena is gone."""

    def retire_views(self, pool: BlockSource) -> None:
        """Free every ``KVBlock`` view of ``pool`` (it is closing)."""


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
