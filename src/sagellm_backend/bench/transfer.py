"""Moving KV blocks between memories: pool swap out to host and back in, block migration
between devices. Bandwidth is bytes moved one way."""

from __future__ import annotations

import statistics
import time
from functools import partial
from typing import Any

from ..api.provider import BackendProvider
from ..protocol import DType
from .harness import (
    BENCH_GEOMETRY,
    GB,
    Result,
    filled_pool,
    is_device,
    median_time,
    on_host_arrays,
    same_kind,
)

__all__ = ["bench_migrate", "bench_swap"]

_SWAP_TARGET_GBPS = 50.0


def _swap_references(p: BackendProvider, rows: Any, sel: list[int], reps: int) -> tuple[float, float, float, float]:
    """Seconds for (ceiling out, ceiling in, baseline out, baseline in) on ``sel``'s bytes.

    Ceiling: one contiguous copy of the same bytes to / from (pinned) host memory. Baseline:
    gather then a pageable copy out; a pageable copy in then scatter.
    """
    n = len(sel)
    if on_host_arrays(p):
        import numpy as np

        host = np.empty((n, rows.shape[1]), dtype=rows.dtype)
        sel_np = np.asarray(sel)

        def naive_in() -> None:
            rows[sel_np] = host

        return (
            median_time(partial(np.copyto, host, rows[:n]), p, reps),
            median_time(partial(np.copyto, rows[:n], host), p, reps),
            median_time(lambda: rows[sel_np].copy(), p, reps),
            median_time(naive_in, p, reps),
        )
    import torch

    host_t = torch.empty((n, rows.shape[1]), dtype=rows.dtype, pin_memory=is_device(p))
    idx = torch.tensor(sel, device=rows.device)
    pageable = torch.empty((n, rows.shape[1]), dtype=rows.dtype)
    return (
        median_time(partial(host_t.copy_, rows[:n], non_blocking=True), p, reps),
        median_time(partial(rows[:n].copy_, host_t, non_blocking=True), p, reps),
        median_time(lambda: rows.index_select(0, idx).to("cpu"), p, reps),
        median_time(lambda: rows.index_copy_(0, idx, pageable.to(rows.device)), p, reps),
    )


def _swap_out_calls(pool: Any, sel: list[int], trials: int) -> tuple[float, float]:
    """Host seconds of ``swap_out(sel)`` until its copy has finished (``wait()``), as an engine sees it:
    (median steady-state call, median first call).

    Steady state: the previous swap-out has been released, so its host buffer is reused. First
    call: no recycled buffer (what a pool's first swap-out of this size meets), so host memory is
    allocated (pinned on accelerators) inside the call.
    """
    holder: list[Any] = []

    def call(first: bool) -> float:
        if holder:
            holder.pop().release()  # an engine releases a swap-out it no longer needs
        if first:
            pool.clear_host_cache()
        t0 = time.perf_counter()
        swapped = pool.swap_out(sel)
        swapped.wait()
        elapsed = time.perf_counter() - t0
        holder.append(swapped)
        return elapsed

    firsts = [call(True) for _ in range(trials)]
    call(False)  # the buffer this leaves behind is the one the steady-state calls reuse
    steady = [call(False) for _ in range(trials)]
    holder.pop().release()
    return statistics.median(steady), statistics.median(firsts)


def bench_swap(provider: BackendProvider, n_blocks: int, *, quick: bool = False) -> list[Result]:
    """Swap ``n_blocks`` scattered 64 KiB blocks out to (pinned) host memory and back in.

    Args:
        provider: The provider under test.
        n_blocks: Blocks per swap.
        quick: Fewer repetitions.

    Returns:
        Three rows, GB/s of block bytes moved one way: ``swap_out`` in the steady state (host buffer
        reused) and on a first call (host memory allocated), both host-timed until ``wait()``
        returns, and ``swap_in``. Ceiling = one contiguous copy of the same bytes between the device
        and pinned host memory; baseline = gather then a pageable copy (out), pageable copy then
        scatter (in).
    """
    import numpy as np

    p, pool, ids = filled_pool(provider, 2 * n_blocks)
    sel = np.random.default_rng(1).permutation(ids)[:n_blocks].tolist()
    nbytes = n_blocks * pool.block_nbytes
    reps = 1 if quick else 5
    rows = pool.arena.reshape(pool.arena.shape[0], -1)
    c_out, c_in, n_out, n_in = _swap_references(p, rows, sel, reps)
    o_steady, o_first = _swap_out_calls(pool, sel, 3 if quick else 7)
    swapped = pool.swap_out(sel)
    swapped.wait()
    o_in = median_time(partial(pool.swap_in, swapped, sel), p, reps)
    want = [pool.read_block(i) for i in sel[:8]]
    for i in sel[:8]:
        pool.write_block(i, b"\x00" * pool.block_nbytes)
    pool.swap_in(swapped, sel)
    p.synchronize()
    if [pool.read_block(i) for i in sel[:8]] != want:
        raise AssertionError("swap benchmark: swap_in did not restore the swapped-out bytes")
    kib = pool.block_nbytes // 1024
    pool.close()
    p.close()
    device = is_device(p)
    target = f">= {_SWAP_TARGET_GBPS:g} GB/s" if device else None
    size = f"{n_blocks} x {kib} KiB"
    res = []
    for name, case, c, n, o, judged in (
        ("swap_out", f"{size}, steady state (host buffer reused)", c_out, n_out, o_steady, True),
        ("swap_out", f"{size}, first call (allocates host memory)", c_out, n_out, o_first, False),
        ("swap_in", size, c_in, n_in, o_in, True),
    ):
        g = nbytes / o / GB
        met = (g >= _SWAP_TARGET_GBPS) if device and judged else None
        res.append(
            Result(
                name, case, "GB/s (one way)", nbytes / c / GB, nbytes / n / GB, g, {}, target if judged else None, met
            )
        )
    return res


def bench_migrate(provider: BackendProvider, *, quick: bool = False, mib: int = 256) -> list[Result]:
    """``kv_block_migrate`` of one ``mib`` MiB block to every other reachable device and back,
    against a plain copy of the same bytes (pinned host / peer).

    Args:
        provider: The provider under test.
        quick: Fewer repetitions.
        mib: Block size in MiB.

    Returns:
        One row per direction, GB/s one way. Ours is host-timed around the call plus a
        synchronize; the first round (allocator warm-up) is dropped.
    """
    p = same_kind(provider)
    tokens = (mib << 20) // BENCH_GEOMETRY.bytes_per_token(DType.FP16)
    reps = 2 if quick else 10
    out = []
    home = p.device
    for target in p.reachable_devices()[1:]:
        blk = p.kv_block_alloc(tokens, DType.FP16)
        nbytes = blk.nbytes
        if on_host_arrays(p):
            import numpy as np

            buf = np.empty_like(blk.data)
            ceiling_to = ceiling_back = median_time(partial(np.copyto, buf, blk.data), p, reps)
        else:
            import torch

            pinned = target == "cpu" and is_device(p)
            dst = torch.empty(blk.data.shape, dtype=blk.data.dtype, device=target, pin_memory=pinned)
            ceiling_to = median_time(partial(dst.copy_, blk.data, non_blocking=True), p, reps)
            ceiling_back = median_time(partial(blk.data.copy_, dst, non_blocking=True), p, reps)
        to_t, back_t = [], []
        for _ in range(reps):
            p.synchronize()
            t0 = time.perf_counter()
            p.kv_block_migrate(blk, target)
            p.synchronize()
            t1 = time.perf_counter()
            p.kv_block_migrate(blk, home)
            p.synchronize()
            to_t.append(t1 - t0)
            back_t.append(time.perf_counter() - t1)
        ours_to = statistics.median(to_t[1:] or to_t)
        ours_back = statistics.median(back_t[1:] or back_t)
        p.kv_block_free(blk)
        for a, b, c, o in ((home, target, ceiling_to, ours_to), (target, home, ceiling_back, ours_back)):
            g, cg = nbytes / o / GB, nbytes / c / GB
            out.append(
                Result(
                    "migrate",
                    f"{mib} MiB block {a} -> {b}",
                    "GB/s (one way)",
                    cg,
                    None,
                    g,
                    {},
                    ">= 90% of plain copy",
                    g >= 0.9 * cg,
                )
            )
    p.close()
    return out
