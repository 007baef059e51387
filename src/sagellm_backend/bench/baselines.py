"""The baselines the benchmarks compare against: what a caller does without this package.

Nothing here is used by the package itself; each baseline is a straightforward, correct
implementation of the same operation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "LinkedFreeQueue",
    "engine_copy_from_lists",
    "index_copy_rows",
    "numpy_copy_from_lists",
    "numpy_copy_rows",
    "per_block_copy_loop",
]


class _LinkedBlock:
    __slots__ = ("block_id", "next", "prev", "ref_cnt")

    def __init__(self, block_id: int) -> None:
        self.block_id = block_id
        self.ref_cnt = 0
        self.prev: _LinkedBlock | None = None
        self.next: _LinkedBlock | None = None


class LinkedFreeQueue:
    """One Python object per block in a doubly linked free list, with a reference count per
    object (the design of vLLM v1's free-block queue).

    Args:
        n: Blocks ``0 .. n-1``, all free.
    """

    def __init__(self, n: int) -> None:
        self.blocks = [_LinkedBlock(i) for i in range(n)]
        self.head = _LinkedBlock(-1)
        self.tail = _LinkedBlock(-1)
        self.head.next, self.tail.prev = self.tail, self.head
        self.num_free = 0
        for b in self.blocks:
            self._append(b)

    def _append(self, b: _LinkedBlock) -> None:
        last = self.tail.prev
        assert last is not None
        last.next, b.prev, b.next, self.tail.prev = b, last, self.tail, b
        self.num_free += 1

    def allocate(self, n: int) -> list[_LinkedBlock]:
        """Pop ``n`` blocks from the head, taking a reference on each.

        Args:
            n: Blocks wanted.

        Returns:
            The blocks, oldest-freed first.

        Raises:
            MemoryError: Fewer than ``n`` blocks are free.
        """
        if n > self.num_free:
            raise MemoryError(f"out of blocks: {n} wanted, {self.num_free} free")
        out = []
        for _ in range(n):
            b = self.head.next
            assert b is not None and b.next is not None
            self.head.next, b.next.prev = b.next, self.head
            b.prev = b.next = None
            b.ref_cnt += 1
            out.append(b)
        self.num_free -= n
        return out

    def free(self, blocks: list[_LinkedBlock]) -> None:
        """Drop a reference on each block; blocks reaching zero go to the tail.

        Args:
            blocks: Blocks from :meth:`allocate`.
        """
        for b in blocks:
            b.ref_cnt -= 1
            if b.ref_cnt == 0:
                self._append(b)


def index_copy_rows(rows: Any, src_idx: Any, dst_idx: Any) -> None:
    """``rows[dst_idx[k]] = rows[src_idx[k]]`` with ``index_select`` + ``index_copy_`` (torch).

    Args:
        rows: 2-D tensor, one row per block.
        src_idx: int64 index tensor on ``rows``' device.
        dst_idx: int64 index tensor on ``rows``' device.
    """
    rows.index_copy_(0, dst_idx, rows.index_select(0, src_idx))


def numpy_copy_rows(rows: Any, src_idx: Any, dst_idx: Any) -> None:
    """``rows[dst_idx] = rows[src_idx]`` by numpy fancy indexing.

    Args:
        rows: 2-D array, one row per block.
        src_idx: Integer index array.
        dst_idx: Integer index array.
    """
    rows[dst_idx] = rows[src_idx]


def engine_copy_from_lists(rows: Any, src: Sequence[int], dst: Sequence[int]) -> None:
    """An engine's own block copy from Python lists: one CPU int64 index tensor built from the
    lists, moved to the device without blocking, then one gather + scatter.

    Args:
        rows: 2-D tensor, one row per block.
        src: Source block ids.
        dst: Destination block ids.
    """
    import torch

    idx = torch.tensor((src, dst), dtype=torch.int64).to(rows.device, non_blocking=True)
    rows.index_copy_(0, idx[1], rows.index_select(0, idx[0]))


def numpy_copy_from_lists(rows: Any, src: Sequence[int], dst: Sequence[int]) -> None:
    """The numpy form of :func:`engine_copy_from_lists` (index array built per call).

    Args:
        rows: 2-D array, one row per block.
        src: Source block ids.
        dst: Destination block ids.
    """
    import numpy as np

    idx = np.asarray((src, dst), dtype=np.int64)
    rows[idx[1]] = rows[idx[0]]


def per_block_copy_loop(views: Sequence[tuple[Any, Any]]) -> None:
    """One ``copy_`` call (one kernel launch on a device) per block.

    Args:
        views: ``(source row, destination row)`` tensor views.
    """
    for s_v, d_v in views:
        d_v.copy_(s_v)
