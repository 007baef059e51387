"""Sweep the Triton copy kernel's (BLOCK words, warps) on this GPU for scattered 64 KiB blocks.

    python bench/tune_copy.py [--env-file /tmp/tune.env]

Prints, per configuration, GB/s (read + written) at 1024 and 8192 blocks against a contiguous
device copy of the same bytes measured in the same run, and the configuration whose worse ratio
is best. With --env-file it writes ``export SAGELLM_COPY_BLOCK=.. SAGELLM_COPY_WARPS=..`` there.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch
import triton
import triton.language as tl

from sagellm_backend.storage.triton_copy import copy_rows_triton, word_view

ROW = 64 << 10


@triton.jit
def _cgcs(src, dst, sidx, didx, row_words, BLOCK: tl.constexpr, CHUNKS: tl.constexpr):
    """Variant: loads cached in L2 only (.cg), streaming stores (.cs)."""
    pid = tl.program_id(0)
    r = pid // CHUNKS
    offs = (pid % CHUNKS) * BLOCK + tl.arange(0, BLOCK)
    m = offs < row_words
    s = tl.load(sidx + r).to(tl.int64)
    d = tl.load(didx + r).to(tl.int64)
    v = tl.load(src + s * row_words + offs, mask=m, cache_modifier=".cg")
    tl.store(dst + d * row_words + offs, v, mask=m, cache_modifier=".cs")


@triton.jit
def _persistent(src, dst, sidx, didx, row_words, n_items, BLOCK: tl.constexpr, CHUNKS: tl.constexpr):
    """Variant: a fixed grid of programs looping over (row, chunk) work items."""
    pid = tl.program_id(0)
    step = tl.num_programs(0)
    for item in range(pid, n_items, step):
        r = item // CHUNKS
        offs = (item % CHUNKS) * BLOCK + tl.arange(0, BLOCK)
        m = offs < row_words
        s = tl.load(sidx + r).to(tl.int64)
        d = tl.load(didx + r).to(tl.int64)
        v = tl.load(src + s * row_words + offs, mask=m, eviction_policy="evict_first")
        tl.store(dst + d * row_words + offs, v, mask=m, eviction_policy="evict_first")


def variants(cases: dict) -> None:
    """Time the kernel variants at BLOCK=2048 words, 8 warps, against the same ceilings."""
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    print("variant                      |  1024 GB/s  ratio |  8192 GB/s  ratio")
    names = (
        "package default",
        "package default (again)",
        ".cg loads/.cs stores",
        "persistent x4/SM",
        "persistent x8/SM",
        "pairs sorted by src",
        "pairs sorted by dst",
    )
    for name in names:
        cells = []
        for n, (arena, s, d, ceiling) in cases.items():
            w, words = word_view(arena)
            chunks = words // 2048
            if name.startswith("package"):
                fn = lambda: copy_rows_triton(arena, s, arena, d, n)  # noqa: E731
            elif name.startswith("pairs sorted"):
                order = torch.argsort(s if "src" in name else d)
                ss, dd = s[order].contiguous(), d[order].contiguous()
                fn = lambda ss=ss, dd=dd: copy_rows_triton(arena, ss, arena, dd, n)  # noqa: E731
            elif name.startswith(".cg"):
                fn = lambda: _cgcs[(n * chunks,)](w, w, s, d, words, BLOCK=2048, CHUNKS=chunks, num_warps=8)  # noqa: E731
            else:
                k = 4 if "x4" in name else 8
                fn = lambda k=k: _persistent[(sms * k,)](  # noqa: E731
                    w, w, s, d, words, n * chunks, BLOCK=2048, CHUNKS=chunks, num_warps=8
                )
            g = 2 * n * ROW / timed(fn) / 1e9
            cells.append(f"{g:10,.0f} {g / ceiling:6.1%}")
        print(f"{name:<28} | {cells[0]} | {cells[1]}", flush=True)


def timed(fn, reps: int = 20, trials: int = 7) -> float:
    fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(trials):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(reps):
            fn()
        b.record()
        b.synchronize()
        out.append(a.elapsed_time(b) / 1e3 / reps)
    return statistics.median(out)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--env-file")
    a = ap.parse_args()
    cases = {}
    for n in (1024, 8192):
        arena = torch.randint(0, 256, (3 * n, ROW), dtype=torch.uint8, device="cuda")
        perm = torch.randperm(3 * n, device="cuda")
        s, d = perm[:n].to(torch.int32), perm[n : 2 * n].to(torch.int32)
        x, y = arena[:n], arena[n : 2 * n]
        ceiling = 2 * n * ROW / timed(lambda: y.copy_(x)) / 1e9
        cases[n] = (arena, s, d, ceiling)
        print(f"n={n}: ceiling (contiguous device copy) {ceiling:,.0f} GB/s", flush=True)
    best = None
    print(f"{'BLOCK':>6} {'warps':>5} | {'1024 GB/s':>10} {'ratio':>6} | {'8192 GB/s':>10} {'ratio':>6}")
    for block in (512, 1024, 2048, 4096, 8192):
        for warps in (4, 8, 16):
            ratios, cells = [], []
            for n, (arena, s, d, ceiling) in cases.items():
                t = timed(lambda: copy_rows_triton(arena, s, arena, d, n, block=block, warps=warps))
                g = 2 * n * ROW / t / 1e9
                ratios.append(g / ceiling)
                cells.append(f"{g:10,.0f} {g / ceiling:6.1%}")
            print(f"{block:>6} {warps:>5} | {cells[0]} | {cells[1]}", flush=True)
            score = min(ratios)
            if best is None or score > best[0]:
                best = (score, block, warps)
    assert best is not None
    variants(cases)
    ref = cases[1024]
    check = ref[0].clone()
    check[ref[2].long()] = check[ref[1].long()]
    copy_rows_triton(ref[0], ref[1], ref[0], ref[2], 1024, block=best[1], warps=best[2])
    assert torch.equal(ref[0], check), "tuned kernel produced wrong bytes"
    print(f"BEST block={best[1]} warps={best[2]} worst-case ratio {best[0]:.1%}")
    if a.env_file:
        with open(a.env_file, "w") as fh:
            fh.write(f"export SAGELLM_COPY_BLOCK={best[1]} SAGELLM_COPY_WARPS={best[2]}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
