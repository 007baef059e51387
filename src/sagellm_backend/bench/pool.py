"""Block-id allocator throughput: allocate + free in batches, reference counts in play."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from ..api.provider import BackendProvider
from ..kv.geometry import KVGeometry
from ..protocol import DType
from .baselines import LinkedFreeQueue
from .harness import Result, same_kind

__all__ = ["bench_pool_alloc"]

_POOL_BLOCKS = 16384
_TARGET_M_BLOCKS_PER_S = 12.0


def _rate(fn: Callable[[], None], blocks_per_call: int, trials: int = 5) -> float:
    """Median millions of blocks per second over ``trials`` calls of ``fn``, after one warm-up."""
    fn()
    rates = []
    for _ in range(trials):
        t0 = time.perf_counter()
        fn()
        rates.append(blocks_per_call / (time.perf_counter() - t0) / 1e6)
    return float(statistics.median(rates))


def bench_pool_alloc(provider: BackendProvider, *, quick: bool = False, batch: int = 64) -> Result:
    """Allocate + free in batches of ``batch`` block ids, with shared (refcount 2) blocks
    outstanding throughout.

    Args:
        provider: Any provider (the allocator runs on the host for all of them).
        quick: Fewer iterations.
        batch: Blocks per call.

    Returns:
        Millions of blocks per second: ours = ``pool.allocate`` / ``pool.free``; baseline = a
        linked free list with one Python object per block (:class:`LinkedFreeQueue`).
    """
    tiny = KVGeometry(num_layers=1, num_kv_heads=1, head_dim=2, kv_factor=1)
    p = same_kind(provider, tiny)
    pool = p.create_kv_pool(_POOL_BLOCKS, block_size=1, dtype=DType.FP16)
    pool.fork(pool.allocate(batch))
    iters = 5000 if quick else 40000
    alloc, free = pool.allocate, pool.free

    def ours() -> None:
        for _ in range(iters):
            free(alloc(batch))

    q = LinkedFreeQueue(_POOL_BLOCKS)
    q.allocate(batch)

    def naive() -> None:
        for _ in range(iters):
            q.free(q.allocate(batch))

    ours_rate, naive_rate = _rate(ours, iters * batch), _rate(naive, iters * batch)
    pool.close()
    p.close()
    return Result(
        "pool allocate+free",
        f"batches of {batch}, refcounts on",
        "M blocks/s",
        None,
        naive_rate,
        ours_rate,
        target=f">= {_TARGET_M_BLOCKS_PER_S:g} M blocks/s",
        met=ours_rate >= _TARGET_M_BLOCKS_PER_S,
    )
