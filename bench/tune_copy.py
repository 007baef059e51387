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

from sagellm_backend.kv.triton_copy import copy_rows_triton

ROW = 64 << 10


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
