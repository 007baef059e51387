"""KV-block benchmarks: each measures, in one run, the ceiling (a plain copy of the same bytes),
the naive baseline, and ours, and reports the ratios. Used by ``sagellm-backend bench`` and the
scripts in ``bench/``.

Bandwidth counts bytes read plus bytes written (a copy of N bytes moves 2N), for the ceiling
and for every variant alike. Device work is timed with device events around a loop of calls
(so host overhead that the device cannot hide shows up); host work with ``perf_counter``.
Each figure is the median of several timed trials after warm-up.

Geometry: 1 layer x 8 KV heads x head dim 128 x K and V in fp16 = 4096 bytes per token, 16-token
blocks = 64 KiB per block (the block size of the issue's targets).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

from .contract import BackendProvider
from .kv.geometry import KVGeometry
from .protocol import DType
from .providers.mock import MockBackendProvider
from .registry import get_provider

__all__ = [
    "BENCH_GEOMETRY",
    "Result",
    "bench_copy_blocks",
    "bench_events",
    "bench_migrate",
    "bench_pool_alloc",
    "bench_swap",
    "run_cli",
    "run_suite",
]

BENCH_GEOMETRY = KVGeometry(num_layers=1, num_kv_heads=8, head_dim=128, kv_factor=2)
BLOCK_TOKENS = 16
GB = 1e9


@dataclass
class Result:
    """One benchmark row.

    Attributes:
        bench: Benchmark id and name (``"P1 copy_blocks"``).
        case: What was measured (``"8192 blocks x 64 KiB"``).
        unit: ``"GB/s"`` (read + written) or ``"M blocks/s"`` or ``"us/op"``.
        ceiling: The plain operation on the same bytes, measured in the same run.
        naive: The straightforward implementation.
        ours: This package.
        extra: Other variants measured (name -> value).
        target: The goal, in words.
        met: Whether ``ours`` meets it.
        higher_is_better: False for times.
    """

    bench: str
    case: str
    unit: str
    ceiling: float | None
    naive: float | None
    ours: float
    extra: dict[str, float] = field(default_factory=dict)
    target: str | None = None
    met: bool | None = None
    higher_is_better: bool = True

    @property
    def of_ceiling(self) -> float | None:
        """``ours / ceiling`` (or ``ceiling / ours`` for times)."""
        if not self.ceiling:
            return None
        return self.ours / self.ceiling if self.higher_is_better else self.ceiling / self.ours

    @property
    def vs_naive(self) -> float | None:
        """Speed-up over the naive baseline."""
        if not self.naive:
            return None
        return self.ours / self.naive if self.higher_is_better else self.naive / self.ours

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with the ratios.

        Returns:
            The row.
        """
        d = asdict(self)
        d["of_ceiling"] = self.of_ceiling
        d["vs_naive"] = self.vs_naive
        return d


# ------------------------------------------------------------------ helpers
def same_kind(provider: BackendProvider, geometry: KVGeometry = BENCH_GEOMETRY) -> BackendProvider:
    """A provider of the same kind and device as ``provider``, with the benchmark geometry.

    Args:
        provider: The provider under test.
        geometry: KV geometry for the new instance.

    Returns:
        The new provider.
    """
    if isinstance(provider, MockBackendProvider):
        return MockBackendProvider(kv_geometry=geometry, max_memory_mb=1 << 20, num_devices=provider.num_devices)
    device_id = getattr(provider, "device_id", None)
    cls: Any = type(provider)
    made: BackendProvider = cls(kv_geometry=geometry) if device_id is None else cls(device_id, kv_geometry=geometry)
    return made


def _is_device(provider: BackendProvider) -> bool:
    return bool(getattr(provider, "is_accelerator", False))


def _median_time(fn: Callable[[], Any], provider: BackendProvider, reps: int, trials: int = 5) -> float:
    """Seconds per call: device events around ``reps`` calls, or host timing; median of trials."""
    fn()
    fn()
    provider.synchronize()
    times = []
    if _is_device(provider):
        import torch

        mod = getattr(torch, provider.accelerator_module)  # type: ignore[attr-defined]
        for _ in range(trials):
            start, end = mod.Event(enable_timing=True), mod.Event(enable_timing=True)
            start.record()
            for _ in range(reps):
                fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3 / reps)
    else:
        for _ in range(trials):
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            provider.synchronize()
            times.append((time.perf_counter() - t0) / reps)
    return float(statistics.median(times))


def _fill_random(provider: BackendProvider, arena: Any) -> None:
    if isinstance(provider, MockBackendProvider):
        import numpy as np

        flat = arena.reshape(-1).view(np.uint8)
        flat[:] = np.random.default_rng(0).integers(0, 256, size=flat.size, dtype=np.uint8)
    else:
        import torch

        arena.reshape(-1).view(torch.uint8).random_(0, 256)


class _LinkedBlock:
    __slots__ = ("block_id", "next", "prev", "ref_cnt")

    def __init__(self, block_id: int) -> None:
        self.block_id = block_id
        self.ref_cnt = 0
        self.prev: _LinkedBlock | None = None
        self.next: _LinkedBlock | None = None


class LinkedFreeQueue:
    """Naive baseline: one Python object per block in a doubly linked free list, with a
    reference count per object (the design of vLLM v1's free-block queue)."""

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
        """Pop ``n`` blocks from the head, taking a reference on each."""
        if n > self.num_free:
            raise MemoryError("out of blocks")
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
        """Drop a reference on each block; blocks reaching zero go to the tail."""
        for b in blocks:
            b.ref_cnt -= 1
            if b.ref_cnt == 0:
                self._append(b)


# ---------------------------------------------------------------- benchmarks
def bench_pool_alloc(provider: BackendProvider, *, quick: bool = False, batch: int = 64) -> Result:
    """P5: allocate + free in batches of ``batch`` block ids, reference counts included.

    Args:
        provider: Any provider (the allocator runs on the host for all of them).
        quick: Fewer iterations.
        batch: Blocks per call.

    Returns:
        Blocks per second (millions), ours vs the linked-list baseline.
    """
    tiny = KVGeometry(num_layers=1, num_kv_heads=1, head_dim=2, kv_factor=1)
    p = same_kind(provider, tiny)
    pool = p.create_kv_pool(16384, block_size=1, dtype=DType.FP16)  # type: ignore[attr-defined]
    pool.fork(pool.allocate(batch))  # keep shared blocks (refcount 2) outstanding throughout
    iters = 5000 if quick else 40000
    alloc, free = pool.allocate, pool.free

    def ours() -> None:
        for _ in range(iters):
            free(alloc(batch))

    q = LinkedFreeQueue(16384)
    q.allocate(batch)

    def naive() -> None:
        for _ in range(iters):
            q.free(q.allocate(batch))

    def rate(fn: Callable[[], None]) -> float:
        fn()
        best = []
        for _ in range(5):
            t0 = time.perf_counter()
            fn()
            best.append(iters * batch / (time.perf_counter() - t0) / 1e6)
        return statistics.median(best)

    ours_rate, naive_rate = rate(ours), rate(naive)
    pool.close()
    p.close()
    return Result(
        "P5 pool alloc+free",
        f"batches of {batch}, refcounts on",
        "M blocks/s",
        None,
        naive_rate,
        ours_rate,
        target=">= 12 M blocks/s",
        met=ours_rate >= 12.0,
    )


def bench_copy_blocks(provider: BackendProvider, n_blocks: int, *, quick: bool = False) -> Result:
    """P1 (CUDA) / P6 (CPU): copy ``n_blocks`` scattered 64 KiB blocks within a pool.

    Args:
        provider: The provider under test.
        n_blocks: Block pairs copied per call.
        quick: Fewer repetitions.

    Returns:
        GB/s (read + written): ceiling = contiguous copy of the same bytes; naive =
        ``index_select`` + ``index_copy_`` (numpy fancy indexing on Mock) on prebuilt index
        tensors; ours = ``copy_blocks`` given the same index form as the baseline (index tensors on
        the arena's device, ``validate=False``); extra ``validated_python_lists`` = the default
        call with Python lists (set validation + id transfer on the host, which dominates at
        these sizes on a GPU).
    """
    import numpy as np

    p = same_kind(provider)
    pool = p.create_kv_pool(3 * n_blocks, block_size=BLOCK_TOKENS, dtype=DType.FP16)  # type: ignore[attr-defined]
    ids = pool.allocate(pool.num_blocks)
    _fill_random(p, pool.arena)
    perm = np.random.default_rng(n_blocks).permutation(ids)
    src, dst = perm[:n_blocks].tolist(), perm[n_blocks : 2 * n_blocks].tolist()
    nbytes = 2 * n_blocks * pool.block_nbytes
    arena = pool.arena
    rows = arena.reshape(arena.shape[0], -1)
    device = _is_device(p)
    reps = 1 if quick else (20 if device else 3)
    extra: dict[str, float] = {}
    if isinstance(p, MockBackendProvider):
        a, b = rows[:n_blocks], rows[n_blocks : 2 * n_blocks]
        ceiling = _median_time(lambda: np.copyto(b, a), p, reps)
        s_np, d_np = np.asarray(src), np.asarray(dst)
        s_ours: Any = s_np
        d_ours: Any = d_np

        def naive_fn() -> None:
            rows[d_np] = rows[s_np]
    else:
        import torch

        a, b = rows[:n_blocks], rows[n_blocks : 2 * n_blocks]
        ceiling = _median_time(lambda: b.copy_(a), p, reps)
        s_idx = torch.tensor(src, device=arena.device)
        d_idx = torch.tensor(dst, device=arena.device)
        s_ours, d_ours = s_idx.to(torch.int32), d_idx.to(torch.int32)

        def naive_fn() -> None:
            rows.index_copy_(0, d_idx, rows.index_select(0, s_idx))

        if device:
            views = [(rows[s], rows[d]) for s, d in zip(src, dst)]

            def loop_fn() -> None:
                for s_v, d_v in views:
                    d_v.copy_(s_v)

            extra["per_block_copy_loop"] = nbytes / _median_time(loop_fn, p, max(1, reps // 10)) / GB
    naive = _median_time(naive_fn, p, reps)
    ours = _median_time(lambda: pool.copy_blocks(s_ours, d_ours, validate=False), p, reps)
    extra["validated_python_lists"] = nbytes / _median_time(lambda: pool.copy_blocks(src, dst), p, reps) / GB
    # correctness of what was timed: every destination equals its source
    for s, d in zip(src[:: max(1, n_blocks // 64)], dst[:: max(1, n_blocks // 64)]):
        if pool.read_block(s) != pool.read_block(d):
            raise AssertionError(f"copy_blocks benchmark produced a wrong block {d} (from {s})")
    pool.close()
    p.close()
    kb = pool.block_nbytes // 1024
    met: bool | None
    if device:
        frac = 0.95 if n_blocks >= 8192 else 0.90
        name, target = "P1 copy_blocks", f">= {frac:.0%} of ceiling"
        met = (nbytes / ours / GB) >= frac * (nbytes / ceiling / GB)
    else:
        name, target = "P6 copy_blocks", ">= 15 GB/s"
        met = nbytes / ours / GB >= 15.0 if provider.name == "cpu" else None
    return Result(
        name,
        f"{n_blocks} blocks x {kb} KiB",
        "GB/s",
        nbytes / ceiling / GB,
        nbytes / naive / GB,
        nbytes / ours / GB,
        extra,
        target,
        met,
    )


def bench_swap(provider: BackendProvider, n_blocks: int, *, quick: bool = False) -> list[Result]:
    """P2: swap ``n_blocks`` scattered 64 KiB blocks out to (pinned) host memory and back in.

    Args:
        provider: The provider under test.
        n_blocks: Blocks per swap.
        quick: Fewer repetitions.

    Returns:
        Two rows (out, in), GB/s of block bytes moved one way: ceiling = one contiguous copy of
        the same bytes between device and pinned host; naive = gather then a pageable copy.
    """
    import numpy as np

    p = same_kind(provider)
    pool = p.create_kv_pool(2 * n_blocks, block_size=BLOCK_TOKENS, dtype=DType.FP16)  # type: ignore[attr-defined]
    ids = pool.allocate(pool.num_blocks)
    _fill_random(p, pool.arena)
    sel = np.random.default_rng(1).permutation(ids)[:n_blocks].tolist()
    nbytes = n_blocks * pool.block_nbytes
    reps = 1 if quick else 5
    rows = pool.arena.reshape(pool.arena.shape[0], -1)
    device = _is_device(p)
    if isinstance(p, MockBackendProvider):
        host = np.empty((n_blocks, rows.shape[1]), dtype=rows.dtype)
        c_out = _median_time(lambda: np.copyto(host, rows[:n_blocks]), p, reps)
        c_in = _median_time(lambda: np.copyto(rows[:n_blocks], host), p, reps)
        sel_np = np.asarray(sel)
        n_out = _median_time(lambda: rows[sel_np].copy(), p, reps)

        def naive_in() -> None:
            rows[sel_np] = host
    else:
        import torch

        host_t = torch.empty((n_blocks, rows.shape[1]), dtype=rows.dtype, pin_memory=device)
        c_out = _median_time(lambda: host_t.copy_(rows[:n_blocks], non_blocking=True), p, reps)
        c_in = _median_time(lambda: rows[:n_blocks].copy_(host_t, non_blocking=True), p, reps)
        idx = torch.tensor(sel, device=rows.device)
        n_out = _median_time(lambda: rows.index_select(0, idx).to("cpu"), p, reps)
        pageable = torch.empty((n_blocks, rows.shape[1]), dtype=rows.dtype)

        def naive_in() -> None:
            rows.index_copy_(0, idx, pageable.to(rows.device))

    n_in = _median_time(naive_in, p, reps)
    holder: list[Any] = []

    def out_fn() -> None:
        holder[:] = [pool.swap_out(sel)]

    o_out = _median_time(out_fn, p, reps)
    swapped = holder[0]
    o_in = _median_time(lambda: pool.swap_in(swapped, sel), p, reps)
    want = [pool.read_block(i) for i in sel[:8]]
    for i in sel[:8]:
        pool.write_block(i, b"\x00" * pool.block_nbytes)
    pool.swap_in(swapped, sel)
    p.synchronize()
    if [pool.read_block(i) for i in sel[:8]] != want:
        raise AssertionError("swap benchmark: swap_in did not restore the swapped-out bytes")
    pool.close()
    p.close()
    kb = pool.block_nbytes // 1024
    case = f"{n_blocks} blocks x {kb} KiB"
    target = ">= 50 GB/s" if device else None
    res = []
    for name, c, n, o in (("P2 swap_out", c_out, n_out, o_out), ("P2 swap_in", c_in, n_in, o_in)):
        g = nbytes / o / GB
        res.append(
            Result(
                name,
                case,
                "GB/s (one way)",
                nbytes / c / GB,
                nbytes / n / GB,
                g,
                {},
                target,
                (g >= 50.0) if device else None,
            )
        )
    return res


def bench_migrate(provider: BackendProvider, *, quick: bool = False, mib: int = 256) -> list[Result]:
    """kv_block_migrate of one ``mib`` MiB block to every other reachable device and back,
    against a plain copy of the same bytes (pinned host / peer).

    Args:
        provider: The provider under test.
        quick: Fewer repetitions.
        mib: Block size in MiB.

    Returns:
        One row per direction, GB/s one way.
    """
    p = same_kind(provider)
    tokens = (mib << 20) // BENCH_GEOMETRY.bytes_per_token(DType.FP16)
    reps = 2 if quick else 10
    out = []
    home = p.device
    for target in p.reachable_devices()[1:]:
        blk = p.kv_block_alloc(tokens, DType.FP16)
        nbytes = blk.nbytes
        if isinstance(p, MockBackendProvider):
            import numpy as np

            buf = np.empty_like(blk.data)
            ceiling_to = ceiling_back = _median_time(partial(np.copyto, buf, blk.data), p, reps)
        else:
            import torch

            pinned = target == "cpu" and _is_device(p)
            dst = torch.empty(blk.data.shape, dtype=blk.data.dtype, device=target, pin_memory=pinned)
            ceiling_to = _median_time(partial(dst.copy_, blk.data, non_blocking=True), p, reps)
            ceiling_back = _median_time(partial(blk.data.copy_, dst, non_blocking=True), p, reps)
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
        # host-timed including the synchronize; the first round includes allocator warm-up
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


def bench_events(provider: BackendProvider, *, quick: bool = False) -> Result | None:
    """Event record + record + elapsed through the HAL vs the raw framework event (host time).

    Args:
        provider: An accelerator provider (returns ``None`` on host providers).
        quick: Fewer iterations.

    Returns:
        Microseconds per (record, record, elapsed) round, ours vs raw.
    """
    if not _is_device(provider):
        return None
    import torch

    mod = getattr(torch, provider.accelerator_module)  # type: ignore[attr-defined]
    n = 2000 if quick else 20000

    def raw() -> float:
        a, b = mod.Event(enable_timing=True), mod.Event(enable_timing=True)
        t0 = time.perf_counter()
        for _ in range(n):
            a.record()
            b.record()
            b.synchronize()
            a.elapsed_time(b)
        return (time.perf_counter() - t0) / n * 1e6

    def ours() -> float:
        a, b = provider.create_event(), provider.create_event()
        t0 = time.perf_counter()
        for _ in range(n):
            a.record()
            b.record()
            b.elapsed_ms(a)
        return (time.perf_counter() - t0) / n * 1e6

    raw(), ours()
    raws, ourss, ratios = [], [], []
    for k in range(9):  # interleaved, alternating order; paired ratios cancel clock drift
        if k % 2:
            o_t, r_t = ours(), raw()
        else:
            r_t, o_t = raw(), ours()
        raws.append(r_t)
        ourss.append(o_t)
        ratios.append(o_t / r_t)
    overhead = statistics.median(ratios)
    return Result(
        "events",
        "record + record + elapsed",
        "us/op",
        statistics.median(raws),
        None,
        statistics.median(ourss),
        {"paired_ours_over_raw": overhead},
        "<= 10% overhead (paired)",
        overhead <= 1.1,
        higher_is_better=False,
    )


# --------------------------------------------------------------------- suite
def plan(provider: BackendProvider, quick: bool) -> list[tuple[str, Callable[[], Any]]]:
    """Benchmarks that fit ``provider``.

    Args:
        provider: The provider.
        quick: Smaller sizes.

    Returns:
        ``(label, thunk)`` pairs.
    """
    device = _is_device(provider)
    sizes = [64, 256, 1024] + ([8192] if device else [])
    if quick:
        sizes = [64, 256] + ([1024] if device else [])
    steps: list[tuple[str, Callable[[], Any]]] = [("pool alloc", lambda: bench_pool_alloc(provider, quick=quick))]
    for n in sizes:
        steps.append((f"copy_blocks {n}", partial(bench_copy_blocks, provider, n, quick=quick)))
    steps.append((f"swap {sizes[-1]}", lambda: bench_swap(provider, sizes[-1], quick=quick)))
    if device:
        steps.append(("migrate", lambda: bench_migrate(provider, quick=quick)))
        steps.append(("events", lambda: bench_events(provider, quick=quick)))
    return steps


def run_suite(
    provider: BackendProvider, *, quick: bool = False, only: set[str] | None = None, progress: bool = True
) -> list[Result]:
    """Run every benchmark that fits ``provider``, with a progress bar on stderr.

    Args:
        provider: The provider.
        quick: Smaller sizes, fewer repetitions.
        only: Labels (prefixes) to run.
        progress: Draw the progress bar.

    Returns:
        The rows.
    """
    steps = [s for s in plan(provider, quick) if not only or any(s[0].startswith(o) for o in only)]
    results: list[Result] = []
    for k, (label, thunk) in enumerate(steps):
        if progress:
            done = int(30 * k / max(1, len(steps)))
            print(
                f"\r[{'#' * done}{'.' * (30 - done)}] {k}/{len(steps)} {label:<20}", end="", file=sys.stderr, flush=True
            )
        out = thunk()
        if out is None:
            continue
        results.extend(out if isinstance(out, list) else [out])
    if progress:
        print(f"\r[{'#' * 30}] {len(steps)}/{len(steps)} done{' ' * 20}", file=sys.stderr)
    return results


def _fmt(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def table(results: list[Result]) -> str:
    """Markdown table of the rows.

    Args:
        results: Rows.

    Returns:
        The table.
    """
    lines = [
        "| benchmark | case | unit | ceiling | naive | ours | ours/ceiling | ours/naive | target | met |",
        "|---|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in results:
        extra = "".join(f"<br>{k}: {_fmt(v)}" for k, v in r.extra.items())
        oc = "-" if r.of_ceiling is None else f"{r.of_ceiling:.0%}"
        vn = "-" if r.vs_naive is None else f"{r.vs_naive:.1f}x"
        met = "-" if r.met is None else ("yes" if r.met else "**no**")
        lines.append(
            f"| {r.bench} | {r.case} | {r.unit} | {_fmt(r.ceiling)} | {_fmt(r.naive)} | "
            f"{_fmt(r.ours)}{extra} | {oc} | {vn} | {r.target or '-'} | {met} |"
        )
    return "\n".join(lines)


def plot_copy_bandwidth(results: list[Result], path: str, title: str) -> None:
    """PNG: copy_blocks bandwidth against block count, ceiling drawn in.

    Args:
        results: Rows (the copy_blocks ones are plotted).
        path: Output PNG.
        title: Plot title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results if "copy_blocks" in r.bench]
    if not rows:
        return
    xs = [int(r.case.split()[0]) for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(xs, [r.ceiling or 0.0 for r in rows], "k--", marker="o", label="ceiling: contiguous copy, same bytes")
    ax.plot(xs, [r.ours for r in rows], marker="o", label="ours: pool.copy_blocks (index tensors)")
    ax.plot(xs, [r.naive or 0.0 for r in rows], marker="s", label="naive: index_select + index_copy_")
    for key in ("validated_python_lists", "per_block_copy_loop"):
        if all(key in r.extra for r in rows):
            ax.plot(xs, [r.extra[key] for r in rows], marker="^", label=key.replace("_", " "))
    ax.set_xscale("log", base=2)
    ax.set_xlabel("scattered 64 KiB blocks per call")
    ax.set_ylabel("GB/s (read + written)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def machine_line(provider: BackendProvider) -> str:
    """One line naming the machine for reports.

    Args:
        provider: The provider.

    Returns:
        Device name, cores, versions.
    """
    cap = provider.capability()
    bits = [f"{cap.device_name} ({provider.device})", f"{os.cpu_count()} CPU cores"]
    try:
        import torch

        bits.append(f"torch {torch.__version__}")
    except ImportError:
        pass
    return ", ".join(bits)


def run_cli(
    provider_name: str,
    *,
    as_json: bool = False,
    report: str | None = None,
    plot: str | None = None,
    quick: bool = False,
    only: str | None = None,
) -> int:
    """``sagellm-backend bench``.

    Args:
        provider_name: Provider to benchmark.
        as_json: Print JSON.
        report: Markdown report path.
        plot: PNG plot path.
        quick: Smaller sizes.
        only: Comma-separated labels.

    Returns:
        Exit status (0; targets missed are reported, not errors).
    """
    provider = get_provider(provider_name)
    selected = {s.strip() for s in only.split(",")} if only else None
    results = run_suite(provider, quick=quick, only=selected, progress=not as_json)
    machine = machine_line(provider)
    when = time.strftime("%Y-%m-%d %H:%M")
    md = table(results)
    if as_json:
        print(
            json.dumps(
                {
                    "provider": provider.name,
                    "machine": machine,
                    "date": when,
                    "results": [r.to_dict() for r in results],
                },
                indent=2,
            )
        )
    else:
        print(f"\nprovider {provider.name} on {machine}, {when}\n")
        print(md)
    if report:
        with open(report, "w", encoding="utf-8") as fh:
            fh.write(
                f"# sagellm-backend bench: {provider.name}\n\nMachine: {machine}  \nDate: {when}  \n"
                f"Command: `sagellm-backend bench --provider {provider_name}"
                f"{' --quick' if quick else ''}`\n\n{md}\n"
            )
    if plot:
        plot_copy_bandwidth(results, plot, f"copy_blocks on {provider.name}: {machine}")
    provider.close()
    return 0
