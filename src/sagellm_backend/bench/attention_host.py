"""Paged decode on the host (torch, CPU): the pool's pages read in place, against
gather-then-SDPA (what an engine does without paged attention) and SDPA on the same KV laid out
contiguously (the reference point), all on the same bytes in the same run."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from .harness import Result

__all__ = ["bench_host_paged_decode"]


def _rounds(fns: dict[str, Callable[[], Any]], rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each variant, timed in rotating order, round by round."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    return times


def bench_host_paged_decode(*, quick: bool = False, seqs: int = 8, ctx: int = 1024) -> Result:
    """Decode ``seqs`` x ``ctx`` tokens (8 query / 2 KV heads, head dim 64, fp32, 16-token shuffled pages).

    Args:
        quick: Fewer rounds.
        seqs: Sequences.
        ctx: Tokens of context each.

    Returns:
        KV-read bandwidth (GB/s): ours (paged decode), baseline (gather, then SDPA), ceiling
        (SDPA on contiguous KV).
    """
    import torch
    import torch.nn.functional as F

    from ..attention import paged_torch
    from ..attention.reference import make_arena_caches, make_block_tables

    hq, hkv, d, bs = 8, 2, 64, 16
    g = torch.Generator().manual_seed(0)
    nblocks = seqs * ctx // bs + 8
    _, k_cache, v_cache = make_arena_caches(nblocks, bs, hkv, d, torch.float32, "cpu", generator=g)
    tables = make_block_tables([ctx] * seqs, bs, nblocks, generator=g, pad_value=0, extra_cols=0)
    lens = torch.full((seqs,), ctx, dtype=torch.int64)
    q = torch.randn(seqs, hq, d, generator=g)
    scale = d**-0.5
    k_flat = k_cache[tables].reshape(seqs, -1, hkv, d).transpose(1, 2).contiguous()
    v_flat = v_cache[tables].reshape(seqs, -1, hkv, d).transpose(1, 2).contiguous()

    def contiguous() -> Any:
        return F.scaled_dot_product_attention(q[:, :, None], k_flat, v_flat, scale=scale, enable_gqa=True)

    def gather() -> Any:
        k = k_cache[tables].reshape(seqs, -1, hkv, d).transpose(1, 2)
        v = v_cache[tables].reshape(seqs, -1, hkv, d).transpose(1, 2)
        return F.scaled_dot_product_attention(q[:, :, None], k, v, scale=scale, enable_gqa=True)

    def ours() -> Any:
        return paged_torch.paged_decode(q, k_cache, v_cache, tables, lens, scale)

    ref = contiguous()[:, :, 0]
    if not torch.allclose(ours(), ref, rtol=1e-4, atol=1e-4):
        raise AssertionError("host paged decode disagrees with SDPA on the same KV")
    times = _rounds({"contiguous": contiguous, "gather": gather, "ours": ours}, 5 if quick else 21)
    kv_bytes = 2 * seqs * ctx * hkv * d * 4
    gbps = {k: kv_bytes / statistics.median(v) / 1e9 for k, v in times.items()}
    # the machine's load moves every variant; a ratio within one round is steadier than either time
    speedup = statistics.median(g / o for g, o in zip(times["gather"], times["ours"]))
    return Result(
        "paged attention decode (host)",
        f"{seqs} x {ctx} tokens, 8/2 heads, d 64, fp32",
        "GB/s (KV read)",
        gbps["contiguous"],
        gbps["gather"],
        gbps["ours"],
        extra={"paired speedup over gather+SDPA": speedup},
        target="faster than gather-then-SDPA (paired)",
        met=speedup > 1.0,
    )
