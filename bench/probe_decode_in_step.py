"""Why the decode kernel takes longer inside a graphed decode step than alone, on one GPU.

Run 23's step profile timed ``decode_kernel`` at 18.2 us per layer at 1 x 1k (112 us at 64 x 1k), while
``tune_decode_chunk.py`` timed the same launch alone at 7.7 us (95.7). The step's launch differs in four ways,
added here one at a time, each launch replayed from a CUDA graph and timed by the profiler (the kernel's own
device time) and by events (per launch, gaps included):

1. ``alone``: ``paged_decode`` over a contiguous query (what the tune script times; the KV stays in L2 between
   replays when it fits);
2. ``+ store``: ``paged_decode_store``, the step's new token stored and attended to in the launch;
3. ``+ rope``: the query and new key rotated in the launch;
4. ``+ views``: query, key and value as views of one ``[B, (Hq + 2 Hkv) * D]`` buffer, as the QKV GEMM leaves them;
5. each of 1 and 4 again after a copy of ``--flush-mb`` MB (the weight GEMMs between two layers' attention evict
   the KV from L2): ``cold``;
6. ``wrapper, pool``: the step's own call, ``PagedAttentionWrapper.run`` with RoPE inside after ``plan``, over
   layer 3 of a block-major 8-layer arena (a pool's layout: a layer's pages 512 KB apart), cold;
7. ``after GEMM``: 4 again, after the step's QKV GEMM (``F.linear`` of a ``[6144, 4096]`` weight, cuBLAS) instead of
   the copy, as in the step: besides the data, another kernel's code has run on every SM (merge width 4, the
   default, and 1: less code; ``32/4/1``: 32-token tiles, one stage, merge width 1, about 60 % of the default's
   machine code); ``after small gemm``: after a GEMM of 2 MB of weights (the code, not the data).
8. ``between GEMMs``: the step's call after the QKV GEMM and before the o-projection GEMM, as in the step;
   ``pages over N GB``: the step's call with the same number of pages spread over a pool of ``--big-gb`` GB
   (the bench's 8-layer pool spans about 18 GB), alone and after a flush: address-translation reach.

    PYTHONPATH=src python bench/probe_decode_in_step.py [--cases 1x1024,8x1024,64x1024] [--flush-mb 256]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_decode_step import kernel_times
from sagellm_backend.attention import paged_triton as pt
from sagellm_backend.attention.wrapper import PagedAttentionWrapper
from tune_decode_chunk import HKV, HQ, PAGE, D, graph_us, tensors, workspace
from tune_gemv import graph_of


def kernel_us(fn: Callable[[], None], reps: int = 20) -> float:
    """Mean device microseconds of ``decode_kernel`` per call, ``fn`` replayed ``reps`` times from one graph."""
    from torch.profiler import ProfilerActivity, profile

    g = graph_of(fn, reps)
    g.replay()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            g.replay()
        torch.cuda.synchronize()
    times = kernel_times(prof).get("decode_kernel", [])
    return sum(times) / max(len(times), 1)


def probe(batch: int, ctx: int, width: int, flush_mb: int, big_gb: int) -> None:
    t = tensors(batch, ctx, width, torch.bfloat16)
    g = torch.Generator(device="cuda").manual_seed(5)
    qkv = torch.randn(batch, (HQ + 2 * HKV) * D, device="cuda", generator=g, dtype=torch.bfloat16)
    q, k, v = qkv.view(batch, HQ + 2 * HKV, D).split((HQ, HKV, HKV), 1)
    qc, kc, vc = q.contiguous(), k.contiguous(), v.contiguous()
    pos = ctx - 1
    slots = (t["bt"][:, pos // PAGE].to(torch.int64) * PAGE + pos % PAGE).contiguous()
    inv = 1.0 / (10000.0 ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
    f = torch.outer(torch.arange(width + 1, dtype=torch.float64), inv)
    cos_sin = torch.cat([f.cos(), f.sin()], 1).float().cuda()
    ws = workspace(batch)
    scale = D**-0.5
    src = torch.empty(flush_mb << 20, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)

    def alone() -> None:
        pt.paged_decode(qc, t["kc"], t["vc"], t["bt"], t["lens"], scale, t["out"], workspace=ws)

    def fused(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, rope: Any) -> Callable[[], None]:
        def call() -> None:
            pt.paged_decode_store(
                query, key, value, t["kc"], t["vc"], t["bt"], t["lens"], slots, scale, t["out"], workspace=ws,
                rope=rope,
            )  # fmt: skip

        return call

    def cold(fn: Callable[[], None]) -> Callable[[], None]:
        def call() -> None:
            dst.copy_(src)
            fn()

        return call

    w_qkv = torch.randn((HQ + 2 * HKV) * D, 4096, device="cuda", generator=g, dtype=torch.bfloat16)
    h = torch.randn(batch, 4096, device="cuda", generator=g, dtype=torch.bfloat16)
    gemm_out = torch.empty(batch, w_qkv.shape[0], device="cuda", dtype=torch.bfloat16)

    w_small, small_out = w_qkv[:256], gemm_out[:, :256]

    def after_gemm(fn: Callable[[], None], small: bool = False) -> Callable[[], None]:
        def call() -> None:
            if small:
                torch.mm(h, w_small.t(), out=small_out)
            else:
                torch.mm(h, w_qkv.t(), out=gemm_out)
            fn()

        return call

    gemm = graph_us(lambda: torch.mm(h, w_qkv.t(), out=gemm_out))
    small_gemm = graph_us(lambda: torch.mm(h, w_small.t(), out=small_out))

    def merge(width: int, block_n: int | None = None, stages: int | None = None) -> Callable[[], None]:
        cfg = pt.decode_config(D, torch.bfloat16, HQ // HKV)
        cfg = pt.DecodeConfig(block_n=block_n or cfg.block_n, num_warps=cfg.num_warps,
                              num_stages=stages or cfg.num_stages, merge_width=width)  # fmt: skip

        def call() -> None:
            pt.paged_decode_store(
                q, k, v, t["kc"], t["vc"], t["bt"], t["lens"], slots, scale, t["out"], workspace=ws,
                rope=(cos_sin, True), cfg=cfg,
            )  # fmt: skip

        return call

    flush = graph_us(lambda: dst.copy_(src))
    n_blocks = t["kc"].shape[0]
    arena = torch.randn(n_blocks, 2, 8, PAGE, HKV, D, device="cuda", generator=g, dtype=torch.bfloat16)
    wrapper = PagedAttentionWrapper(
        HQ, HKV, D, block_size=PAGE, max_batch=batch, max_blocks_per_seq=t["bt"].shape[1], device="cuda"
    )
    wrapper.plan([pos] * batch, t["bt"].cpu().numpy(), slots.cpu().numpy())
    pool_kv = (arena[:, 0, 3], arena[:, 1, 3])

    def step_call() -> None:
        wrapper.run(q, k, v, pool_kv, out=t["out"], cos_sin_cache=cos_sin, is_neox=True)

    # The step's sequence around it: the QKV GEMM before and the o-projection GEMM after (a kernel launched
    # after it may start early if it uses programmatic dependent launch).
    w_o = torch.randn(4096, HQ * D, device="cuda", generator=g, dtype=torch.bfloat16)
    o_out = torch.empty(batch, 4096, device="cuda", dtype=torch.bfloat16)

    def between_gemms() -> None:
        torch.mm(h, w_qkv.t(), out=gemm_out)
        step_call()
        torch.mm(t["out"].view(batch, HQ * D), w_o.t(), out=o_out)

    o_gemm = graph_us(lambda: torch.mm(t["out"].view(batch, HQ * D), w_o.t(), out=o_out))
    # The same pages spread over a pool of --big-gb (the bench's 8-layer pool spans ~18 GB): translation reach.
    per_block = 2 * 8 * PAGE * HKV * D * 2
    n_big = max(n_blocks, (big_gb << 30) // per_block)
    big = torch.empty(n_big, 2, 8, PAGE, HKV, D, device="cuda", dtype=torch.bfloat16)
    big_table = torch.randperm(n_big, generator=torch.Generator().manual_seed(3))[: t["bt"].numel()]
    big_table = big_table.view(t["bt"].shape).to(torch.int32)
    big_wrapper = PagedAttentionWrapper(
        HQ, HKV, D, block_size=PAGE, max_batch=batch, max_blocks_per_seq=t["bt"].shape[1], device="cuda"
    )
    big_slots = big_table[:, pos // PAGE].to(torch.int64) * PAGE + pos % PAGE
    big_wrapper.plan([pos] * batch, big_table.numpy(), big_slots.numpy())
    big_kv = (big[:, 0, 3], big[:, 1, 3])

    def big_call() -> None:
        big_wrapper.run(q, k, v, big_kv, out=t["out"], cos_sin_cache=cos_sin, is_neox=True)

    variants = [
        ("alone", alone), ("+ store", fused(qc, kc, vc, None)), ("+ rope", fused(qc, kc, vc, (cos_sin, True))),
        ("+ views", fused(q, k, v, (cos_sin, True))), ("alone, cold", cold(alone)),
        ("+ views, cold", cold(fused(q, k, v, (cos_sin, True)))), ("wrapper, pool, cold", cold(step_call)),
        ("+ views, after GEMM", after_gemm(fused(q, k, v, (cos_sin, True)))),
        ("merge 1, after GEMM", after_gemm(merge(1))), ("merge 1", merge(1)),
        ("+ views, after small gemm", after_gemm(fused(q, k, v, (cos_sin, True)), small=True)),
        ("32/4/1 merge 1 (less code)", merge(1, 32, 1)), ("32/4/1 merge 1, after GEMM", after_gemm(merge(1, 32, 1))),
        ("wrapper, pool, between GEMMs", between_gemms), ("wrapper, pool", step_call),
        (f"wrapper, pages over {big_gb} GB", big_call), (f"wrapper, pages over {big_gb} GB, cold", cold(big_call)),
    ]  # fmt: skip
    cells = []
    for label, fn in variants:
        ev = graph_us(fn) - (
            flush if "cold" in label else gemm + o_gemm if "between" in label else gemm if "GEMM" in label
            else small_gemm if "gemm" in label else 0.0
        )  # fmt: skip
        cells.append(f"{label}: kernel {kernel_us(fn):.1f} / events {ev:.1f}")
    print(f"{batch}x{ctx} (table {width}, flush {flush:.0f} us): " + " | ".join(cells), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default="1x1024,8x1024,64x1024")
    ap.add_argument("--width", type=int, default=8448, help="block-table width in tokens")
    ap.add_argument("--flush-mb", type=int, default=256)
    ap.add_argument("--big-gb", type=int, default=16, help="the pool the scattered pages spread over")
    args = ap.parse_args()
    print(f"device {torch.cuda.get_device_name()}, us per launch (profiler kernel time / graph events)")
    for case in args.cases.split(","):
        b, c = (int(x) for x in case.split("x"))
        probe(b, c, args.width, args.flush_mb, args.big_gb)


if __name__ == "__main__":
    main()
