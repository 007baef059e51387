"""The pool's copies that also change ownership: copy-on-write, swap out to host, swap in, migrate
to another pool. They work on a pool's :class:`~.state.PoolState` (allocator, arena and mover
under its lock); :class:`~.pool.KVCachePool` checks its own arguments and calls them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..device import Device
from ..errors import InvalidArgumentError
from .ids import as_id_list

if TYPE_CHECKING:
    from ..api.streams import Event, Stream
    from .state import PoolState
    from .swap import SwappedBlocks

__all__ = ["make_writable", "migrate_blocks", "swap_in", "swap_out"]


def make_writable(st: PoolState, ids: Sequence[int], *, stream: Stream | None = None) -> list[int]:
    """Copy-on-write; arguments as :meth:`KVCachePool.make_writable`."""
    lst = as_id_list(ids, "ids")
    st.check_open()
    if len(set(lst)) != len(lst):
        raise InvalidArgumentError("make_writable ids contain duplicates; pass each block once.")
    s = st.host.stream(stream)
    with st.lock:
        st.alloc.require_live(lst, "make_writable ids")
        shared = [i for i in lst if st.alloc.refcount(i) > 1]
        if not shared:
            return list(lst)
        st.alloc.require_droppable(shared, "make_writable")
        peak = st.alloc.peak_used
        fresh = st.alloc.allocate(len(shared))
        try:
            st.host.fault("transfer")
            st.mover.copy_blocks(st.arena, shared, fresh, s)
        except BaseException:
            st.alloc.undo_allocate(fresh, peak)
            raise
        st.alloc.free(shared)
        mapping = dict(zip(shared, fresh))
    return [mapping.get(i, i) for i in lst]


def swap_out(st: PoolState, ids: Sequence[int], *, stream: Stream | None = None) -> tuple[Any, list[int], Event | None]:
    """Copy blocks to host memory; arguments as :meth:`KVCachePool.swap_out`.

    Returns:
        ``(rows, ids, event)``: the host rows, the ids as a list, the event after the copy.
    """
    lst = as_id_list(ids, "ids")
    st.check_open()
    st.require_live(lst, "swap_out ids")
    s = st.stream(stream)
    out = st.buffers.take((len(lst), *tuple(st.arena.shape[1:])))
    rows = st.mover.gather(st.arena, lst, Device("cpu"), s, out=out)
    return rows, lst, st.mover.record(s)


def swap_in(
    st: PoolState, swapped: SwappedBlocks, dst_ids: Sequence[int] | None, *, stream: Stream | None
) -> list[int]:
    """Copy swapped-out blocks (already checked to be this pool's, unreleased) back into the pool;
    arguments as :meth:`KVCachePool.swap_in`."""
    n = swapped.num_blocks
    st.check_open()
    s = st.host.stream(stream)
    fresh: tuple[list[int], int] | None = None
    if dst_ids is None:
        fresh = st.take(n)
        dst = fresh[0]
    else:
        dst = as_id_list(dst_ids, "dst_ids")
        if len(dst) != n:
            raise InvalidArgumentError(f"swap_in got {len(dst)} dst_ids for {n} swapped blocks.")
        if len(set(dst)) != len(dst):
            raise InvalidArgumentError("swap_in dst_ids contain duplicates.")
        st.require_live(dst, "swap_in dst_ids")
    try:
        if swapped.event is not None and s is not None:
            s.wait_event(swapped.event)
        elif swapped.event is not None:
            swapped.wait()
        st.host.fault("transfer")
        st.mover.scatter(st.arena, dst, swapped.data, s)
    except BaseException:
        if fresh is not None:
            st.give_back(*fresh)
        raise
    return dst


def migrate_blocks(
    st: PoolState, ids: Sequence[int], target: PoolState, target_device: Device, *, stream: Stream | None = None
) -> list[int]:
    """Copy blocks into another pool of the same provider (already checked to match).

    Args:
        st: This pool's parts.
        ids: Live block ids here.
        target: The target pool's parts (may be ``st``).
        target_device: The target pool's device.
        stream: Stream to enqueue on.

    Returns:
        The new ids in the target.
    """
    lst = as_id_list(ids, "ids")
    st.check_open()
    target.check_open()
    st.require_live(lst, "migrate ids")
    s = st.stream(stream)
    dst, peak = target.take(len(lst))
    try:
        if target is st:
            st.mover.copy_blocks(st.arena, lst, dst, s)
        else:
            rows = st.mover.gather(st.arena, lst, target_device, s)
            target.mover.scatter(target.arena, dst, rows, s)
    except BaseException:
        target.give_back(dst, peak)
        raise
    return dst
