"""``copy_blocks`` within a pool: bandwidth on large batches, host cost per call on short lists.

Blocks are 64 KiB (:data:`~.harness.BENCH_GEOMETRY`, 16 tokens, fp16), picked at random from
the pool so that sources and destinations are scattered. Bandwidth counts bytes read plus
bytes written (a copy of N bytes moves 2N), for the ceiling and every variant alike.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from ..api.provider import BackendProvider
from ..errors import InvalidArgumentError
from .baselines import (
    engine_copy_from_lists,
    index_copy_rows,
    numpy_copy_from_lists,
    numpy_copy_rows,
    per_block_copy_loop,
)
from .harness import (
    GB,
    Result,
    filled_pool,
    is_device,
    median_time,
    on_host_arrays,
    wall_times_per_call,
)

__all__ = ["bench_copy_blocks", "bench_copy_short_lists"]


def _scattered_pairs(pool: Any, n: int, seed: int) -> tuple[list[int], list[int]]:
    """``n`` source and ``n`` distinct destination ids, disjoint, in random order."""
    import numpy as np

    perm = np.random.default_rng(seed).permutation(pool.num_blocks)
    return perm[:n].tolist(), perm[n : 2 * n].tolist()


def _check_copies(p: BackendProvider, pool: Any, src: list[int], dst: list[int], copy: Callable[[], Any]) -> None:
    """Zero sampled destination blocks, run ``copy`` once, and check they now hold their
    sources' (random) bytes, so that what is timed is known to copy.

    Raises:
        AssertionError: A destination block does not equal its source.
    """
    step = max(1, len(src) // 64)
    pairs = list(zip(src[::step], dst[::step]))
    zero = bytes(pool.block_nbytes)
    for _, d in pairs:
        pool.write_block(d, zero)
    copy()
    p.synchronize()
    for s, d in pairs:
        if pool.read_block(s) != pool.read_block(d):
            raise AssertionError(f"copy_blocks benchmark: block {d} is not a copy of block {s}")


def bench_copy_blocks(provider: BackendProvider, n_blocks: int, *, quick: bool = False) -> Result:
    """Copy ``n_blocks`` scattered 64 KiB blocks within a pool, one call per batch.

    Args:
        provider: The provider under test.
        n_blocks: Block pairs copied per call.
        quick: Fewer repetitions.

    Returns:
        GB/s (read + written). Ceiling = one contiguous copy of the same bytes; baseline =
        ``index_select`` + ``index_copy_`` (numpy fancy indexing on Mock) on prebuilt index
        tensors; ours = ``copy_blocks`` given the same index form (index tensors on the arena's
        device, ``validate=False``). Extra ``validated_python_lists`` = the default call with
        Python lists; on accelerators also ``per_block_copy_loop`` (one ``copy_`` per block).
    """
    p, pool, _ = filled_pool(provider, 3 * n_blocks)
    src, dst = _scattered_pairs(pool, n_blocks, seed=n_blocks)
    nbytes = 2 * n_blocks * pool.block_nbytes
    rows = pool.arena.reshape(pool.arena.shape[0], -1)
    a, b = rows[:n_blocks], rows[n_blocks : 2 * n_blocks]
    device = is_device(p)
    reps = 1 if quick else (20 if device else 3)
    extra: dict[str, float] = {}
    s_ours: Any
    d_ours: Any
    if on_host_arrays(p):
        import numpy as np

        ceiling = median_time(partial(np.copyto, b, a), p, reps)
        s_ours, d_ours = np.asarray(src), np.asarray(dst)
        naive = median_time(partial(numpy_copy_rows, rows, s_ours, d_ours), p, reps)
    else:
        import torch

        ceiling = median_time(partial(b.copy_, a), p, reps)
        s_idx = torch.tensor(src, device=rows.device)
        d_idx = torch.tensor(dst, device=rows.device)
        s_ours, d_ours = s_idx.to(torch.int32), d_idx.to(torch.int32)
        naive = median_time(partial(index_copy_rows, rows, s_idx, d_idx), p, reps)
        if device:
            views = [(rows[s], rows[d]) for s, d in zip(src, dst)]
            loop_t = median_time(partial(per_block_copy_loop, views), p, max(1, reps // 10))
            extra["per_block_copy_loop"] = nbytes / loop_t / GB
    ours_fn = partial(pool.copy_blocks, s_ours, d_ours, validate=False)
    _check_copies(p, pool, src, dst, ours_fn)
    ours = median_time(ours_fn, p, reps)
    extra["validated_python_lists"] = nbytes / median_time(partial(pool.copy_blocks, src, dst), p, reps) / GB
    kib = pool.block_nbytes // 1024
    pool.close()
    p.close()
    met: bool | None
    if device:
        frac = 0.95 if n_blocks >= 8192 else 0.90
        target = f">= {frac:.0%} of ceiling"
        met = ceiling / ours >= frac
    else:
        target = ">= 15 GB/s"
        met = nbytes / ours / GB >= 15.0 if provider.name == "cpu" else None
    return Result(
        "copy_blocks",
        f"{n_blocks} x {kib} KiB",
        "GB/s",
        nbytes / ceiling / GB,
        nbytes / naive / GB,
        nbytes / ours / GB,
        extra,
        target,
        met,
    )


def short_list_case(n_pairs: int) -> str:
    """The case label of :func:`bench_copy_short_lists` for ``n_pairs``.

    Args:
        n_pairs: (src, dst) pairs per call.

    Returns:
        ``"1 pair (Python lists)"``, ``"4 pairs (Python lists)"``, ...
    """
    return f"{n_pairs} pair{'' if n_pairs == 1 else 's'} (Python lists)"


def bench_copy_short_lists(provider: BackendProvider, n_pairs: int, *, quick: bool = False) -> Result:
    """Wall time of one ``copy_blocks`` call given short Python lists (the decode-step case).

    Each trial makes many calls back to back and synchronizes the device once, after the loop,
    so the device stays pipelined and the figure is the host-side cost per call (the device
    work for a few 64 KiB blocks is shorter). Variants run interleaved, trial by trial.

    Args:
        provider: The provider under test.
        n_pairs: (src, dst) block pairs per call, as plain Python int lists.
        quick: Fewer calls per trial.

    Returns:
        Microseconds per call (lower is better). Ours = ``pool.copy_blocks(src, dst)`` (default,
        validated); baseline = the engine's own path: an int64 index tensor built from the lists
        on the CPU, moved to the device with ``non_blocking=True``, one ``index_select`` +
        ``index_copy_`` (numpy fancy indexing with an array built per call on Mock); no ceiling.
        Extras: ``validate=False`` = ours with the lists trusted; ``engine copy, indices on
        device`` = the baseline's copy alone, index tensors built beforehand. The target is not
        judged on Mock (a test double whose baseline is numpy).

    Raises:
        InvalidArgumentError: ``n_pairs`` is not positive.
    """
    if n_pairs < 1:
        raise InvalidArgumentError(f"n_pairs must be >= 1; got {n_pairs}. Pass the number of (src, dst) pairs.")
    p, pool, _ = filled_pool(provider, max(8, 2 * n_pairs))
    src, dst = _scattered_pairs(pool, n_pairs, seed=1000 + n_pairs)
    rows = pool.arena.reshape(pool.arena.shape[0], -1)
    mock = on_host_arrays(p)
    if mock:
        import numpy as np

        baseline: Any = partial(numpy_copy_from_lists, rows, src, dst)
        bare: Any = partial(numpy_copy_rows, rows, np.asarray(src), np.asarray(dst))
    else:
        import torch

        baseline = partial(engine_copy_from_lists, rows, src, dst)
        s_idx, d_idx = (torch.tensor(x, dtype=torch.int64, device=rows.device) for x in (src, dst))
        bare = partial(index_copy_rows, rows, s_idx, d_idx)
    ours = partial(pool.copy_blocks, src, dst)
    _check_copies(p, pool, src, dst, ours)
    _check_copies(p, pool, src, dst, baseline)
    fns = {
        "ours": ours,
        "baseline": baseline,
        "bare": bare,
        "unvalidated": partial(pool.copy_blocks, src, dst, validate=False),
    }
    times = wall_times_per_call(fns, p, reps=50 if quick else 1000, trials=5 if quick else 9)
    pool.close()
    p.close()
    us = {k: v * 1e6 for k, v in times.items()}
    return Result(
        "copy_blocks",
        short_list_case(n_pairs),
        "us/call",
        None,
        us["baseline"],
        us["ours"],
        {"validate=False": us["unvalidated"], "engine copy, indices on device": us["bare"]},
        "<= engine's own path",
        None if mock else us["ours"] <= us["baseline"],
        higher_is_better=False,
    )
