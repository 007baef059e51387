"""The pool's copies that also change ownership: copy-on-write, swap out to host, swap in, migrate
to another pool. Part of the pool (they work on its allocator, arena and mover under its lock)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..device import Device, normalize_device
from ..errors import ForeignBlockError, InvalidArgumentError, InvalidArgumentTypeError
from .ids import as_id_list
from .swap import SwappedBlocks

if TYPE_CHECKING:
    from ..api.streams import Stream
    from .pool import KVCachePool

__all__ = ["make_writable", "migrate_blocks", "swap_in", "swap_out"]


def make_writable(pool: KVCachePool, ids: Sequence[int], *, stream: Stream | None = None) -> list[int]:
    """Copy-on-write; arguments as :meth:`KVCachePool.make_writable`."""
    lst = as_id_list(ids, "ids")
    pool._check_open()
    if len(set(lst)) != len(lst):
        raise InvalidArgumentError("make_writable ids contain duplicates; pass each block once.")
    s = pool._host.stream(stream)
    with pool._lock:
        pool._alloc.require_live(lst, "make_writable ids")
        shared = [i for i in lst if pool._alloc.refcount(i) > 1]
        if not shared:
            return list(lst)
        pool._alloc.require_droppable(shared, "make_writable")
        peak = pool._alloc.peak_used
        fresh = pool._alloc.allocate(len(shared))
        try:
            pool._host.fault("transfer")
            pool._mover.copy_blocks(pool._arena, shared, fresh, s)
        except BaseException:
            pool._alloc.undo_allocate(fresh, peak)
            raise
        pool._alloc.free(shared)
        mapping = dict(zip(shared, fresh))
    return [mapping.get(i, i) for i in lst]


def swap_out(pool: KVCachePool, ids: Sequence[int], *, stream: Stream | None = None) -> SwappedBlocks:
    """Copy blocks to host memory; arguments as :meth:`KVCachePool.swap_out`."""

    lst = as_id_list(ids, "ids")
    pool._check_open()
    with pool._lock:
        pool._alloc.require_live(lst, "swap_out ids")
    s = pool._host.stream(stream)
    pool._host.fault("transfer")
    out = pool._host_buffers.take((len(lst), *tuple(pool._arena.shape[1:])))
    rows = pool._mover.gather(pool._arena, lst, Device("cpu"), s, out=out)
    return SwappedBlocks(pool, rows, lst, pool._mover.record(s))


def swap_in(
    pool: KVCachePool, swapped: SwappedBlocks, dst_ids: Sequence[int] | None = None, *, stream: Stream | None = None
) -> list[int]:
    """Copy swapped-out blocks back into the pool. Arguments as :meth:`KVCachePool.swap_in`."""
    if not isinstance(swapped, SwappedBlocks):
        raise InvalidArgumentTypeError(
            f"swap_in needs the SwappedBlocks from swap_out(); got {type(swapped).__name__}."
        )
    if swapped.data is None:
        raise InvalidArgumentError(
            "these swapped-out blocks were released (SwappedBlocks.release()); their host copy is gone. "
            "Swap in before releasing."
        )
    if swapped.pool is not pool:
        raise ForeignBlockError("these blocks were swapped out of another pool; swap them in there.")
    pool._check_open()
    s = pool._host.stream(stream)
    fresh: tuple[list[int], int] | None = None
    if dst_ids is None:
        fresh = pool._take(swapped.num_blocks)
        dst = fresh[0]
    else:
        dst = as_id_list(dst_ids, "dst_ids")
        if len(dst) != swapped.num_blocks:
            raise InvalidArgumentError(f"swap_in got {len(dst)} dst_ids for {swapped.num_blocks} swapped blocks.")
        if len(set(dst)) != len(dst):
            raise InvalidArgumentError("swap_in dst_ids contain duplicates.")
        with pool._lock:
            pool._alloc.require_live(dst, "swap_in dst_ids")
    try:
        if swapped.event is not None and s is not None:
            s.wait_event(swapped.event)
        elif swapped.event is not None:
            swapped.wait()
        pool._host.fault("transfer")
        pool._mover.scatter(pool._arena, dst, swapped.data, s)
    except BaseException:
        if fresh is not None:
            pool._give_back(*fresh)
        raise
    return dst


def migrate_blocks(
    pool: KVCachePool, ids: Sequence[int], target: KVCachePool, *, stream: Stream | None = None
) -> list[int]:
    """Copy blocks into another pool; arguments as :meth:`KVCachePool.migrate_blocks`."""

    if not isinstance(target, type(pool)):
        raise InvalidArgumentTypeError(f"target must be a KVCachePool; got {type(target).__name__}.")
    if target._host is not pool._host:
        raise ForeignBlockError(
            "target pool belongs to another provider instance; create it with this "
            "provider's create_kv_pool(device=...)."
        )
    if (target.kv_cache_dtype, target.block_size) != (pool.kv_cache_dtype, pool.block_size):
        raise InvalidArgumentError(
            f"target pool holds {target.block_size}-token {target.kv_cache_dtype} blocks, this one "
            f"{pool.block_size}-token {pool.kv_cache_dtype}; they must match."
        )
    lst = as_id_list(ids, "ids")
    pool._check_open()
    target._check_open()
    with pool._lock:
        pool._alloc.require_live(lst, "migrate ids")
    s = pool._host.stream(stream)
    pool._host.fault("transfer")
    dst, peak = target._take(len(lst))
    try:
        if target is pool:
            pool._mover.copy_blocks(pool._arena, lst, dst, s)
        else:
            rows = pool._mover.gather(pool._arena, lst, normalize_device(target.device), s)
            target._mover.scatter(target._arena, dst, rows, s)
    except BaseException:
        target._give_back(dst, peak)
        raise
    return dst
