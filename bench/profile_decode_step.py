"""Where one decode step of bench_decode_step.py's stack spends its time on a GPU.

    PYTHONPATH=src python3 bench/profile_decode_step.py [--layers 2] [--batches 1 8 64] [--ctx 1024]

Three tables, all from one run:

1. Device time per kernel of one *graphed* step (torch.profiler over graph replays), per layer, beside the replay's
   wall time: the sum of kernels against the wall shows the gaps between kernels inside the graph.
2. Each weight GEMM alone (``F.linear`` replayed from a graph) as GB/s of weight bytes, beside the device copy rate
   (bytes read + written) measured in the same run: how close cuBLAS comes to the floor at this batch.
3. Host microseconds per call of each component of an *eager* layer (back-to-back calls, no sync), beside
   ``F.linear`` and a plain ``torch.add`` as the cost of any one torch call on this host.
4. Eager steps under torch.profiler: their kernels' device time per step against a step's wall time (does the
   device wait on the host?), and the host operations with the most self time.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_decode_step import FULL, Case, capture, copy_rate, make_attention
from decode_stack import OurStack, Shape
from sagellm_backend import get_provider
from tune_gemv import graph_of


def replay_us(g: torch.cuda.CUDAGraph, n: int) -> float:
    """Mean microseconds of one replay of ``g`` over ``n`` replays."""
    g.replay()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        g.replay()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n * 1e6


def kernel_times(prof: Any) -> dict[str, list[float]]:
    """Device microseconds of each kernel a torch.profiler run recorded, by kernel name."""
    per: dict[str, list[float]] = defaultdict(list)
    for e in prof.events():
        us = getattr(e, "device_time", None)
        if us is None:
            us = getattr(e, "cuda_time", 0.0)
        if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA and us:
            per[e.name].append(float(us))
    return per


def kernel_table(ours: OurStack, attn: Any, case: Case, x: torch.Tensor, layers: int) -> None:
    """Table 1 for one case."""
    graph, _, _, gattn = capture(ours, attn, case, x, x.device)
    gattn.begin_step(*case.meta(1))
    wall = replay_us(graph, 50)
    n = 10
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(n):
            graph.replay()
        torch.cuda.synchronize()
    per = kernel_times(prof)
    total = sum(sum(v) for v in per.values()) / n
    print(f"\n## graphed step, batch {case.batch} x {case.ctx}: replay {wall:.1f} us, kernels {total:.1f} us "
          f"({100 * total / wall:.0f} %), gaps {wall - total:.1f} us; per layer {wall / layers:.1f} us")  # fmt: skip
    print("| kernel | calls/step | us/step | us/layer | share |")
    print("|---|---|---|---|---|")
    for name, v in sorted(per.items(), key=lambda kv: -sum(kv[1])):
        s = sum(v) / n
        print(f"| {name[:90]} | {len(v) / n:.0f} | {s:.1f} | {s / layers:.1f} | {100 * s / wall:.1f} % |")


def gemm_table(ours: OurStack, batches: list[int], rate: float) -> None:
    """Table 2."""
    lw = ours.layers[0]
    s = ours.shape
    print(f"\n## weight GEMMs alone (F.linear in a graph of 20), copy rate {rate / 1e9:.0f} GB/s (r+w)")
    print("| weight | [out, in] | batch | us | GB/s of weights | % of copy rate |")
    print("|---|---|---|---|---|---|")
    for b in batches:
        x = torch.randn(b, s.hidden, device=ours.device, dtype=s.dtype)
        xm = torch.randn(b, s.mlp, device=ours.device, dtype=s.dtype)
        for name in ("qkv", "o", "gate_up", "down"):
            w = lw[name]
            inp = xm if name == "down" else x[:, : w.shape[1]]
            g = graph_of(lambda w=w, inp=inp: F.linear(inp, w), 20)
            us = replay_us(g, 20) / 20
            gbs = w.numel() * w.element_size() / us / 1e3
            print(f"| {name} | {list(w.shape)} | {b} | {us:.1f} | {gbs:,.0f} | {100 * gbs * 1e9 / rate:.0f} % |")


def host_table(ours: OurStack, attn: Any, case: Case, x: torch.Tensor) -> None:
    """Table 3 for one case."""
    s = ours.shape
    b = case.batch
    qd, kd = s.heads * s.head_dim, s.kv_heads * s.head_dim
    lw = ours.layers[0]
    attn.begin_step(*case.meta(0))
    h = ours.rmsnorm(x, lw["ln1"], s.eps)
    qkv = ours.linear(h, lw["qkv"])
    q, k, v = qkv[:, :qd], qkv[:, qd : qd + kd], qkv[:, qd + kd :]
    q3, k3, v3 = q.view(b, s.heads, s.head_dim), k.view(b, s.kv_heads, s.head_dim), v.view(b, s.kv_heads, s.head_dim)
    gu = ours.linear(h, lw["gate_up"])
    pos = attn.positions
    metas = [case.meta(i) for i in range(4)]
    xa, ra = x.clone(), x.clone()
    act = torch.empty(b, s.mlp, dtype=s.dtype, device=x.device)
    att = torch.empty(b, s.heads, s.head_dim, dtype=s.dtype, device=x.device)
    comps: list[tuple[str, Any]] = [
        ("torch.add (any torch call)", lambda: torch.add(x, x)),
        ("F.linear qkv (torch directly)", lambda: F.linear(h, lw["qkv"])),
        ("linear qkv (get_kernel)", lambda: ours.linear(h, lw["qkv"])),
        ("rmsnorm", lambda: ours.rmsnorm(x, lw["ln1"], s.eps)),
        ("add_rmsnorm", lambda: ours.add_rmsnorm(x, x, lw["ln2"], s.eps)),
        ("add_rmsnorm, inplace=True", lambda: ours.add_rmsnorm(xa, ra, lw["ln2"], s.eps, inplace=True)),
        ("silu_mul", lambda: ours.silu_mul(gu)),
        ("silu_mul, out=", lambda: ours.silu_mul(gu, out=act)),
        ("rotary_embedding", lambda: ours.rope(pos, q, k, s.head_dim, ours.cos_sin, True)),
        ("q/k/v slices + views", lambda: (qkv[:, :qd].view(b, s.heads, s.head_dim),
                                          qkv[:, qd : qd + kd].view(b, s.kv_heads, s.head_dim),
                                          qkv[:, qd + kd :].view(b, s.kv_heads, s.head_dim))),
        ("attention (wrapper.run)", lambda: attn.attend(0, q3, k3, v3)),
        ("attention (wrapper.run), out=", lambda: attn.attend(0, q3, k3, v3, out=att)),
        ("plan (per step)", lambda: attn.begin_step(*metas[0])),
    ]  # fmt: skip
    print(f"\n## eager host cost per call, batch {b} x {case.ctx} (mean of 64 back-to-back calls)")
    print("| component | host us/call |")
    print("|---|---|")
    for name, fn in comps:
        fn()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(64):
            fn()
        us = (time.perf_counter() - t0) / 64 * 1e6
        torch.cuda.synchronize()
        print(f"| {name} | {us:.1f} |")
    width = case.tables.shape[1]
    for trusted in (False, True):
        a = make_attention(ours, b, width, trusted)
        a.begin_step(*case.meta(0))
        ours.step(x, a)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        a.begin_step(*case.meta(1))
        t1 = time.perf_counter()
        ours.step(x, a)
        t2 = time.perf_counter()
        torch.cuda.synchronize()
        t3 = time.perf_counter()
        for i in range(10):
            a.begin_step(*case.meta(i))
            ours.step(x, a)
        torch.cuda.synchronize()
        loop = (time.perf_counter() - t3) / 10 * 1e6
        print(f"| one eager step, {s.layers} layers, plan(trusted={trusted}): plan / layers on the host / until done "
              f"/ per step of 10 back to back | {(t1 - t0) * 1e6:.0f} / {(t2 - t1) * 1e6:.0f} / "
              f"{(t3 - t0) * 1e6:.0f} / {loop:.0f} |")  # fmt: skip


def eager_table(ours: OurStack, attn: Any, case: Case, x: torch.Tensor) -> None:
    """Table 4 for one case: eager steps under torch.profiler, the device time of their kernels per step beside the
    wall time of a step without the profiler (kernels well below the wall: the device waits on the host), and the
    host operations with the most self time."""
    from torch.profiler import ProfilerActivity, profile

    n = 5
    for i in range(2):
        attn.begin_step(*case.meta(i))
        ours.step(x, attn)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(n):
        attn.begin_step(*case.meta(i))
        ours.step(x, attn)
    torch.cuda.synchronize()
    wall = (time.perf_counter() - t0) / n * 1e6
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for i in range(n):
            attn.begin_step(*case.meta(i))
            ours.step(x, attn)
        torch.cuda.synchronize()
    dev = sum(sum(v) for v in kernel_times(prof).values())
    print(f"\n## eager steps, batch {case.batch} x {case.ctx}: wall {wall:.0f} us/step without the profiler, kernels "
          f"{dev / n:.0f} us/step ({100 * dev / n / wall:.0f} % of the wall)")  # fmt: skip
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14, max_name_column_width=60))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--batches", type=int, nargs="*", default=[1, 8, 64])
    ap.add_argument("--ctx", type=int, default=1024)
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("profile_decode_step.py needs a CUDA device", file=sys.stderr)
        return 2
    shape = Shape(**{**FULL.__dict__, "layers": args.layers})
    provider = get_provider("cuda", kv_geometry=OurStack.geometry(shape))
    dev = torch.device(provider.device)
    torch.cuda.set_device(dev)
    max_b = max(args.batches)
    steps = 8
    width = -(-(args.ctx + steps + 2) // shape.block_size)
    ours = OurStack(provider, shape, max_b * width * len(args.batches) + 1, max_pos=args.ctx + steps + 4)
    rate = copy_rate(dev, 1 << 30)
    print(f"device {torch.cuda.get_device_name(dev)}, torch {torch.__version__}, {args.layers} layers")
    with torch.no_grad():
        gemm_table(ours, args.batches, rate)
        for i, b in enumerate(args.batches):
            case = Case(f"{b}x{args.ctx}", b, args.ctx, False, ours.pool, shape, width, steps, seed=i)
            x = torch.randn(b, shape.hidden, device=dev, dtype=shape.dtype)
            attn = make_attention(ours, b, width, trusted=False)
            host_table(ours, attn, case, x)
            eager_table(ours, attn, case, x)
            kernel_table(ours, make_attention(ours, b, width, trusted=False), case, x, args.layers)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
