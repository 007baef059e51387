"""Block movement for numpy arenas (the Mock provider): the memcpy engine, run in stream order."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ...kv.mover import BlockMover
from ..hostcopy import copy_rows

if TYPE_CHECKING:
    from ...api.streams import Stream
    from ...device import Device

__all__ = ["NumpyMover"]


class NumpyMover(BlockMover):
    """Moves blocks of numpy arenas."""

    def view(self, arena: Any, block_id: int) -> Any:
        return arena[block_id]

    @staticmethod
    def _run(stream: Stream | None, fn: Callable[[], None]) -> None:
        # fn is a closure: it keeps the arrays alive until the stream has run it
        if stream is None:
            fn()
        else:
            stream.submit(fn)

    def copy_blocks(self, arena: Any, src: list[int], dst: list[int], stream: Stream | None) -> None:
        row = arena[0].nbytes
        self._run(stream, lambda: copy_rows(arena.ctypes.data, src, arena.ctypes.data, dst, len(src), row))

    def gather(self, arena: Any, ids: list[int], device: Device, stream: Stream | None, out: Any = None) -> Any:
        if out is None:
            out = np.empty((len(ids), *arena.shape[1:]), dtype=arena.dtype)
        row = arena[0].nbytes
        self._run(stream, lambda: copy_rows(arena.ctypes.data, ids, out.ctypes.data, None, len(ids), row))
        return out

    def scatter(self, arena: Any, ids: list[int], rows: Any, stream: Stream | None) -> None:
        src = np.ascontiguousarray(rows)
        row = arena[0].nbytes
        self._run(stream, lambda: copy_rows(src.ctypes.data, None, arena.ctypes.data, ids, len(ids), row))
