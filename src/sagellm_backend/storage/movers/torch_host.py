"""Block movement for torch arenas in host memory: the memcpy engine (:mod:`..hostcopy`) on the
caller's thread or a host stream's worker."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ...device import Device
from ...kv.mover import BlockMover
from ...streams import HostStream
from ..hostcopy import copy_rows

if TYPE_CHECKING:
    from ...api.streams import Stream
    from ..torch_storage import TorchStorage

__all__ = ["TorchHostMover"]


def _copy(src: Any, src_ids: list[int] | None, dst: Any, dst_ids: list[int] | None, count: int, row: int) -> None:
    """:func:`copy_rows` between two tensors; the task holds both, so neither can be freed while
    a stream worker still copies (a pool closed, a swap buffer dropped)."""
    copy_rows(src.data_ptr(), src_ids, dst.data_ptr(), dst_ids, count, row)


class TorchHostMover(BlockMover):
    """Moves blocks of a host arena (CPU provider pools, pinned pools of accelerators).

    Args:
        storage: The storage the arena belongs to (for device targets and stream contexts).
    """

    def __init__(self, storage: TorchStorage) -> None:
        self.storage = storage

    def view(self, arena: Any, block_id: int) -> Any:
        return arena[block_id]

    def run(self, stream: Stream | None, fn: Callable[..., Any], *args: Any) -> None:
        """Run host code in stream order: on a host stream's worker, else here after device work
        that may touch host memory has finished.

        Args:
            stream: The stream.
            fn: The host function.
            *args: Its arguments.
        """
        if isinstance(stream, HostStream):
            stream.submit(fn, *args)
            return
        if stream is not None and self.storage.is_accelerator:
            stream.synchronize()
        elif self.storage.is_accelerator:
            self.storage.synchronize()
        fn(*args)

    def copy_blocks(self, arena: Any, src: list[int], dst: list[int], stream: Stream | None) -> None:
        self.run(stream, _copy, arena, src, arena, dst, len(src), arena.nbytes // arena.shape[0])

    def gather(self, arena: Any, ids: list[int], device: Device, stream: Stream | None, out: Any = None) -> Any:
        n = len(ids)
        row = arena[0].numel() * arena.element_size()
        if out is None or device.type != "cpu":
            shape = (n, *arena.shape[1:])
            out = self.storage.alloc_tensor(Device("cpu"), arena.dtype, shape, pinned=self.storage.is_accelerator)
        self.run(stream, _copy, arena, ids, out, None, n, row)
        if device.type == "cpu":
            return out
        with self.storage.stream_ctx(stream):
            return out.to(str(device), non_blocking=True)

    def scatter(self, arena: Any, ids: list[int], rows: Any, stream: Stream | None) -> None:
        if rows.device.type != "cpu":
            with self.storage.stream_ctx(stream):
                rows = rows.to("cpu")
        rows = rows.contiguous()
        row = arena[0].numel() * arena.element_size()
        self.run(stream, _copy, rows, None, arena, ids, len(ids), row)
