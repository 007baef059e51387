"""Checks of the paged KV-cache pool (``create_kv_pool``): batch allocation, reference counts,
copies, copy-on-write, swapping and block views."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ...api import BackendProvider
from ...errors import BlockFreedError, InvalidArgumentError, ResourceExhaustedError, UnsupportedOperationError
from .base import CheckSkipped, expect, provider_check
from .support import read_write, storage_dtype

if TYPE_CHECKING:
    from ...kv.pool import KVCachePool

__all__: list[str] = []


def _pool(p: BackendProvider, n: int = 8, bs: int = 4) -> KVCachePool:
    try:
        return p.create_kv_pool(n, block_size=bs, dtype=storage_dtype(p))
    except UnsupportedOperationError as exc:
        raise CheckSkipped(f"needs create_kv_pool; provider says: {exc}") from None


@provider_check
def check_pool_allocation_and_refcounts(p: BackendProvider) -> None:
    """Pool: atomic batch allocation, ResourceExhausted with nothing taken, fork, free, stats."""
    pool = _pool(p, 8)
    ids = pool.allocate(6)
    assert len(set(ids)) == 6 and all(0 <= i < 8 for i in ids)
    err = expect(ResourceExhaustedError, lambda: pool.allocate(3), "allocate past capacity")
    assert isinstance(err, MemoryError)
    assert pool.stats().free_blocks == 2, "a failed batch took blocks"
    pool.fork(ids[:2])
    assert pool.refcount(ids[0]) == 2 and pool.refcount(ids[5]) == 1
    pool.free(ids)
    st = pool.stats()
    assert st.used_blocks == 2 and st.shared_blocks == 0 and st.peak_used_blocks == 6
    expect(BlockFreedError, lambda: pool.free([ids[5]]), "pool double free")
    pool.free(ids[:2])
    assert pool.stats().used_blocks == 0
    pool.close()


@provider_check
def check_pool_copy_and_cow(p: BackendProvider) -> None:
    """Pool: copy_blocks and copy-on-write are bit-exact on random data; poison fully overwritten."""
    pool = _pool(p, 12)
    ids = pool.allocate(9)
    data = {i: os.urandom(pool.block_nbytes) for i in ids}
    for i, payload in data.items():
        pool.write_block(i, payload)
    src, dst = ids[:4], ids[4:8]
    for i in dst:
        pool.write_block(i, b"\xee" * pool.block_nbytes)
    pool.copy_blocks(src, dst)
    p.synchronize()
    for s, d in zip(src, dst):
        assert pool.read_block(d) == data[s], f"block {d} != block {s}"
    expect(InvalidArgumentError, lambda: pool.copy_blocks([ids[0]], [ids[0]]), "overlapping copy")
    shared = pool.fork([ids[8]])
    new = pool.make_writable([ids[0], shared[0]])
    p.synchronize()
    assert new[0] == ids[0] and new[1] != ids[8]
    assert pool.read_block(new[1]) == data[ids[8]] and pool.refcount(ids[8]) == 1
    pool.close()


@provider_check
def check_pool_swap_roundtrip(p: BackendProvider) -> None:
    """Pool: swap_out to host and swap_in back are bit-exact."""
    pool = _pool(p, 10)
    ids = pool.allocate(5)
    data = [os.urandom(pool.block_nbytes) for _ in ids]
    for i, d in zip(ids, data):
        pool.write_block(i, d)
    swapped = pool.swap_out(ids)
    swapped.wait()
    p.synchronize()
    pool.free(ids)
    back = pool.swap_in(swapped)
    p.synchronize()
    assert [pool.read_block(i) for i in back] == data
    pool.close()


@provider_check
def check_pool_block_view(p: BackendProvider) -> None:
    """pool.block(id) is a KVBlock on the pool's memory that holds one reference."""
    read, _ = read_write(p)
    pool = _pool(p, 4)
    (i,) = pool.allocate(1)
    payload = os.urandom(pool.block_nbytes)
    pool.write_block(i, payload)
    view = pool.block(i)
    assert pool.refcount(i) == 2 and read(view) == payload
    other = p.kv_block_alloc(pool.block_size, pool.dtype)
    p.kv_block_copy(view, other)
    p.synchronize()
    assert read(other) == payload
    p.kv_block_free(view)
    assert pool.refcount(i) == 1
    p.kv_block_free(other)
    pool.close()
