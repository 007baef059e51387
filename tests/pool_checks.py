"""Checks shared by the pool tests of several providers."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any


def check_bytes_survive_moves(pool: Any, new_pool: Callable[[], Any], n: int) -> dict[int, bytes]:
    """Write random bytes into ``n`` blocks, then copy, fork + copy-on-write, swap out and in, and migrate to
    ``new_pool()``: every destination reads back the bytes written (copy-on-write gives new ids).

    Args:
        pool: The pool under test.
        new_pool: Makes the migration target (same geometry and dtype).
        n: Blocks written.

    Returns:
        The bytes written, by block id, for further checks.
    """
    ids = pool.allocate(n)
    data = {i: os.urandom(pool.block_nbytes) for i in ids}
    for i in ids:
        pool.write_block(i, data[i])
    dst = pool.allocate(n)
    pool.copy_blocks(ids, dst)
    assert [pool.read_block(d) for d in dst] == [data[i] for i in ids]
    pool.fork(ids[:2])
    private = pool.make_writable(ids[:2])
    assert private != ids[:2] and [pool.read_block(p) for p in private] == [data[i] for i in ids[:2]]
    swapped = pool.swap_out(ids)
    swapped.wait()
    assert [pool.read_block(i) for i in pool.swap_in(swapped)] == [data[i] for i in ids]
    target = new_pool()
    assert [target.read_block(i) for i in pool.migrate_blocks(ids, target)] == [data[i] for i in ids]
    return data
