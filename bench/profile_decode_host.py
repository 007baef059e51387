"""Where the host time of one decode-step attention call goes: cProfile of ``PagedAttentionWrapper.run`` (two
launches and fused) and of ``PagedAttentionBackend.forward`` on reused metadata, plus back-to-back call rates.

    PYTHONPATH=src python bench/profile_decode_host.py [--batch 8] [--ctx 2048] [--calls 3000]

CUDA only. Prints, per path, microseconds per call in a loop of back-to-back calls (the GPU queue kept short by a
sync every 32 calls) and the top functions by own time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time
from collections.abc import Callable
from typing import Any


def _rate(fn: Callable[[], Any], calls: int, sync: Callable[[], None]) -> float:
    total = 0.0
    for i in range(0, calls, 32):
        sync()
        t0 = time.perf_counter()
        for _ in range(min(32, calls - i)):
            fn()
        total += time.perf_counter() - t0
    sync()
    return total / calls * 1e6


def main() -> None:
    """Run the profile."""
    import torch

    from sagellm_backend.attention import paged_triton
    from sagellm_backend.attention.builder import PagedAttentionMetadataBuilder
    from sagellm_backend.attention.paged import PagedAttentionBackend
    from sagellm_backend.attention.wrapper import PagedAttentionWrapper

    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--top", type=int, default=22)
    a = ap.parse_args()
    dev = torch.device("cuda")
    hq, hkv, d, bs = 32, 8, 128, 16
    width = a.ctx // bs
    nb = a.batch * width + 1
    kc = torch.zeros(nb, bs, hkv, d, dtype=torch.bfloat16, device=dev)
    cache = (kc, torch.zeros_like(kc))
    table = torch.randperm(nb - 1)[: a.batch * width].view(a.batch, width).to(torch.int32)
    ctx = torch.full((a.batch,), a.ctx - 1, dtype=torch.int32)
    slots = table[:, -1].to(torch.int64) * bs + (a.ctx - 1) % bs
    q = torch.randn(a.batch, hq, d, device=dev, dtype=torch.bfloat16)
    k = torch.randn(a.batch, hkv, d, device=dev, dtype=torch.bfloat16)
    v = torch.randn_like(k)  # distinct from the key, as an engine's QKV split gives
    out = torch.empty_like(q)
    w = PagedAttentionWrapper(hq, hkv, d, block_size=bs, max_batch=a.batch, max_blocks_per_seq=width, device=dev,
                              num_blocks=nb)  # fmt: skip
    w.plan(ctx, table, slots)
    backend = PagedAttentionBackend(bs)
    builder = PagedAttentionMetadataBuilder(bs, device=dev)
    # One metadata object per path: its decode fast path keeps the launch mode it was first checked with.
    md2, md1 = (builder.build_decode_metadata(ctx.tolist(), table.to(dev)) for _ in range(2))
    paths: dict[str, tuple[bool, Callable[[], Any]]] = {
        "run, two launches": (False, lambda: w.run(q, k, v, cache, out=out)),
        "run, fused": (True, lambda: w.run(q, k, v, cache, out=out)),
        "forward same md, two launches": (False, lambda: backend.forward(q, k, v, md2, kv_cache=cache)),
        "forward same md, fused": (True, lambda: backend.forward(q, k, v, md1, kv_cache=cache)),
        "plan (host inputs)": (False, lambda: w.plan(ctx, table, slots)),
        "plan trusted": (False, lambda: w.plan(ctx, table, slots, trusted=True)),
    }
    sync = torch.cuda.synchronize
    for name, (fused, fn) in paths.items():
        paged_triton.FUSED_DECODE = fused
        for _ in range(5):
            fn()
        sync()
        us = _rate(fn, a.calls, sync)
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(a.calls // 3):
            fn()
        prof.disable()
        sync()
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(a.top)
        print(f"==== {name}: {us:.1f} us/call back to back (batch {a.batch}, ctx {a.ctx})")
        print("\n".join(line for line in s.getvalue().splitlines() if line.strip())[:6000])


if __name__ == "__main__":
    main()
