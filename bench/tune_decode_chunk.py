"""Decode kernel time against how each sequence's span is spread over the splits, and fp8 points, on one GPU,
every launch replayed from a CUDA graph (no host time in the figures).

    python bench/tune_decode_chunk.py [--json FILE] [--cases 1x1024,8x1024] [--skip-fp8 | --fp8-only]

Part 1, bf16 (32/8 heads, head 128, 16-token pages): contexts of 1k and 8k in a launch sized for a block table of
``--width`` tokens (what a captured decode step holds), for ``DecodeConfig.chunk_floor`` values and split counts;
``static`` is the partition sized for the table's width (the kernel before per-sequence spreading) and ``tight``
the default launch over a table only as wide as the context (what a host that knows the lengths could launch).
The ceiling is the KV bytes at the rate of a device copy measured in the same run.

Part 2, fp8 e4m3 (fp16 dots): 64 x 4k and 4 x 32k, the default and other ``DecodeConfig`` points and split counts,
beside the bf16 default of the same case, and both defaults over head-major pages (each page stored
``[Hkv, page, D]``; ``--fp8-only`` runs this part alone).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from pathlib import Path
from typing import Any

import torch

from sagellm_backend.attention import paged_triton as pt
from sagellm_backend.attention.kv_quant import fp8_dtype, quantize
from sagellm_backend.attention.paged_workspace import DecodeWorkspace
from sagellm_backend.bench.paged_cases import time_cuda
from sagellm_backend.kernels.triton_launch import cdiv

HQ, HKV, D, PAGE = 32, 8, 128, 16
CASES = [(1, 1024), (8, 1024), (64, 1024), (1, 8192), (8, 8192)]
# (label, chunk_floor: "static" = the partition sized for the table's width, "tight" = a table as wide as the
# context; merge_width; splits: None = the default count (split_limit's, unrounded since run 23), or a number).
# Run 22 measured merge width 1 against 4 and the floors 64-512; these points ask what the split count adds, and
# (eleventh pass) whether merging 8 or 16 splits per step shortens a short context's launch.
FLOORS: list[tuple[str, int | str, int, int | None]] = [
    ("static", "static", 4, None), ("default", 64, 4, None), ("128", 128, 4, None), ("16 splits", 64, 4, 16),
    ("32 splits", 64, 4, 32), ("tight", "tight", 4, None), ("merge 8", 64, 8, None), ("merge 16", 64, 16, None),
]  # fmt: skip
FP8_CASES = [(64, 4096), (4, 32768)]
# DecodeConfig keywords of fp8 points beside the default (64/4/2, fp16 dots, fp8_v_asm where it applies, merge 4;
# run 23: 1.79x / 1.75x bf16; 32-token tiles, 3 stages, 5-6 programs per wave, early value loads on 128-token tiles
# were slower): two warps (run 23: 1.79x / 1.77x), and fewer splits at 4 x 32k (fewer programs per wave).
_F8: dict[str, Any] = {"fp8_f16_dot": True, "fp8_v_asm": None}
FP8_POINTS: list[dict[str, Any]] = [
    {"block_n": 64, "num_warps": 2, "num_stages": 2, **_F8},
    {"block_n": 64, "num_warps": 4, "num_stages": 2, "waves": 3.0, **_F8},
    {"block_n": 64, "num_warps": 4, "num_stages": 2, "waves": 2.0, **_F8},
]  # fmt: skip
FP8_SPLITS: list[int | None] = [None]


def graph_us(fn: Any, reps: int = 20, trials: int = 7) -> float:
    """Microseconds per call of ``fn`` replayed ``reps`` times from one CUDA graph (median of ``trials``)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(reps):
            fn()
    g.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(trials):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1e3 / reps)
    return float(statistics.median(times))


def timed_point(fn: Any, ref: torch.Tensor | None) -> tuple[torch.Tensor, float, float]:
    """One point of a probe: ``fn``'s output (a copy), its largest difference from ``ref`` (the first point's output;
    None makes this output the reference) and :func:`graph_us` of ``fn``.

    Returns:
        ``(reference, max abs difference, us per call)``.
    """
    out = fn().clone()
    ref = out if ref is None else ref
    return ref, float((out.float() - ref.float()).abs().max()), graph_us(fn)


def workspace(batch: int, splits: int = 64) -> DecodeWorkspace:
    """Partials and counters for ``batch`` sequences and ``splits`` splits."""
    dev = torch.device("cuda")
    return DecodeWorkspace(
        torch.empty(batch * HQ * splits * D, dtype=torch.float32, device=dev),
        torch.empty(batch * HQ * splits, dtype=torch.float32, device=dev),
        torch.zeros(batch * HKV, dtype=torch.int32, device=dev),
    )


def tensors(batch: int, ctx: int, width: int, dtype: torch.dtype) -> dict[str, Any]:
    """Query, shuffled pages (bf16), a ``width``-token block table and lengths ``ctx``."""
    g = torch.Generator(device="cuda").manual_seed(batch * 7 + ctx)
    blocks = cdiv(width, PAGE)
    n = batch * blocks
    kc = torch.randn(n, PAGE, HKV, D, device="cuda", generator=g, dtype=dtype)
    vc = torch.randn(n, PAGE, HKV, D, device="cuda", generator=g, dtype=dtype)
    bt = torch.randperm(n, device="cuda", generator=g).to(torch.int32).view(batch, blocks)
    q = torch.randn(batch, HQ, D, device="cuda", generator=g, dtype=dtype)
    lens = torch.full((batch,), ctx, dtype=torch.int32, device="cuda")
    return {"q": q, "kc": kc, "vc": vc, "bt": bt, "lens": lens, "out": torch.empty_like(q)}


def fp8_caches(t: dict[str, Any], fp8: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(k8, v8, k_scale, v_scale)``: :func:`tensors`' bf16 caches quantised to ``fp8`` (token-major pages) with
    per-tensor scales that map each cache's largest magnitude to the format's largest value."""
    ks, vs = (c.float().abs().amax().reshape(1) / torch.finfo(fp8).max for c in (t["kc"], t["vc"]))
    n = t["kc"].shape[0]
    k8, v8 = (quantize(c.reshape(-1, HKV, D), s, fp8).view(n, PAGE, HKV, D) for c, s in ((t["kc"], ks), (t["vc"], vs)))
    return k8, v8, ks, vs


def head_major(cache: torch.Tensor) -> torch.Tensor:
    """The same values stored head-major (each page ``[Hkv, PAGE, D]``), seen ``[n, PAGE, Hkv, D]``."""
    return cache.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)


def copy_us(nbytes: int) -> float:
    """Microseconds to read ``nbytes`` at the rate of a device copy (read + written) measured here: the faster of
    graph-replayed copies (small sizes, no launch gaps) and back-to-back copies timed by events (large sizes; run
    22's graph-replayed 537 MB copies ran at 2.4 TB/s, events time them at 3.0)."""
    src = torch.empty(max(nbytes, 1 << 20), dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    best = min(graph_us(lambda: dst.copy_(src)), 1e6 * time_cuda(lambda: dst.copy_(src)))
    return best * nbytes / src.numel() / 2


def part1(width: int, cases: list[tuple[int, int]]) -> list[dict[str, Any]]:
    rows = []
    sm = pt.sm_count(torch.device("cuda"))
    for batch, ctx in cases:
        t = tensors(batch, ctx, width, torch.bfloat16)
        scale = D**-0.5
        kv_bytes = batch * ctx * HKV * D * 2 * 2
        ceil = copy_us(kv_bytes)
        base = pt.decode_config(D, torch.bfloat16, HQ // HKV)
        splits, static_chunk = pt.decode_splits(batch, HKV, t["bt"].shape[1] * PAGE, sm, base)
        ws = workspace(batch)  # any split count of these launches (the tight table may round to more)
        line = [f"{batch}x{ctx} (table {width}, {splits} splits): ceiling {ceil:.1f} us"]
        for label, floor, merge, n_split in FLOORS:
            bt = t["bt"]
            if floor == "tight":
                bt = bt[:, : cdiv(ctx, PAGE)].contiguous()
                cfg = base
            else:
                cfg = pt.DecodeConfig(
                    block_n=base.block_n, num_warps=base.num_warps, num_stages=base.num_stages,
                    chunk_floor=static_chunk if floor == "static" else int(floor), merge_width=merge,
                )  # fmt: skip

            def call(bt: torch.Tensor = bt, cfg: pt.DecodeConfig = cfg, n: Any = n_split) -> None:
                pt.paged_decode(
                    t["q"], t["kc"], t["vc"], bt, t["lens"], scale, t["out"], cfg=cfg, splits=n, workspace=ws
                )

            us = graph_us(call)
            rows.append({"case": f"{batch}x{ctx}", "floor": label, "us": us, "ceiling_us": ceil, "splits": splits})
            line.append(f"{label}: {us:.1f} ({100 * ceil / us:.0f} %)")
        print(" | ".join(line), flush=True)
    return rows


def part2() -> list[dict[str, Any]]:
    rows = []
    fp8 = fp8_dtype("fp8_e4m3")
    for batch, ctx in FP8_CASES:
        t = tensors(batch, ctx, ctx, torch.bfloat16)
        scale = D**-0.5
        k8, v8, ks, vs = fp8_caches(t, fp8)
        fp8_bytes = batch * ctx * HKV * D * 2
        ceil = copy_us(fp8_bytes)
        ws = workspace(batch)

        def bf16() -> None:
            pt.paged_decode(t["q"], t["kc"], t["vc"], t["bt"], t["lens"], scale, t["out"], workspace=ws)

        bf16_us = graph_us(bf16)

        def dflt() -> None:
            pt.paged_decode(t["q"], k8, v8, t["bt"], t["lens"], scale, t["out"], workspace=ws, k_scale=ks, v_scale=vs)

        d_us = graph_us(dflt)
        print(f"fp8 {batch}x{ctx}: ceiling {ceil:.1f} us, bf16 default {bf16_us:.1f} us, fp8 default {d_us:.1f} us "
              f"({bf16_us / d_us:.2f}x bf16, {100 * ceil / d_us:.0f} % of copy)", flush=True)  # fmt: skip
        rows.append({"case": f"{batch}x{ctx}", "kind": "fp8 default", "us": d_us, "bf16_us": bf16_us,
                     "ceiling_us": ceil})  # fmt: skip
        # Head-major pages (FlashInfer's HND): each page stored [Hkv, page, D], so one head's page is one contiguous
        # run (2 KB of fp8) instead of 16 rows 1 KB apart; the kernels take any token/head strides.
        hnd = [head_major(c) for c in (k8, v8, t["kc"], t["vc"])]
        for label, kc, vc, sc in (("fp8", hnd[0], hnd[1], {"k_scale": ks, "v_scale": vs}), ("bf16", *hnd[2:], {})):

            def head_major(kc: torch.Tensor = kc, vc: torch.Tensor = vc, sc: dict[str, Any] = sc) -> None:
                pt.paged_decode(t["q"], kc, vc, t["bt"], t["lens"], scale, t["out"], workspace=ws, **sc)

            us = graph_us(head_major)
            rows.append({"case": f"{batch}x{ctx}", "kind": f"{label} default, head-major pages", "us": us,
                         "bf16_us": bf16_us, "ceiling_us": ceil})  # fmt: skip
            print(f"  {label} default, head-major pages: {us:.1f} us, {bf16_us / us:.2f}x bf16 (token-major), "
                  f"{100 * ceil * (2 if label == 'bf16' else 1) / us:.0f} % of copy", flush=True)  # fmt: skip
        for point in FP8_POINTS:
            cfg = pt.DecodeConfig(**point)
            for splits in FP8_SPLITS if point.get("waves") is None else [None]:

                def call(cfg: pt.DecodeConfig = cfg, splits: int | None = splits) -> None:
                    pt.paged_decode(
                        t["q"], k8, v8, t["bt"], t["lens"], scale, t["out"], cfg=cfg, splits=splits, workspace=ws,
                        k_scale=ks, v_scale=vs,
                    )  # fmt: skip

                us = graph_us(call)
                extra = "".join(
                    f" {k}={v}" for k, v in point.items() if k not in ("block_n", "num_warps", "num_stages")
                )
                tag = f"{cfg.block_n}/{cfg.num_warps}/{cfg.num_stages}{extra} splits={splits}"
                rows.append({"case": f"{batch}x{ctx}", "kind": tag, "us": us, "bf16_us": bf16_us, "ceiling_us": ceil})
                print(f"  {tag}: {us:.1f} us, {bf16_us / us:.2f}x bf16, {100 * ceil / us:.0f} % of copy", flush=True)
    return rows


# Part 3 (``--hnd-sweep``): fp8 over head-major (and token-major) pages, the default (96 registers, 5 waves since the
# ninth pass) and the compiler's registers at 4 waves (the default before) against register caps that
# let 5 or 6 programs share a multiprocessor (96 / 80 registers: bench/kernel_resources.py) with the splits that
# fill those slots in one wave (waves), at 4 x 32k (run 27's miss) and 64 x 4k. Run 30 (first sweep): more splits
# at 4 programs per SM, 3 stages, 8 warps, 128- or 32-token tiles and merge width 1 were all slower.
HND_POINTS: list[dict[str, Any]] = [
    {}, {"maxnreg": None, "waves": 4.0}, {"merge_width": 16}, {"maxnreg": 88},
    {"maxnreg": 88, "merge_width": 8}, {"maxnreg": 88, "merge_width": 20}, {"merge_width": 20}, {"merge_width": 32},
]  # fmt: skip


def part3() -> list[dict[str, Any]]:
    rows = []
    fp8 = fp8_dtype("fp8_e4m3")
    base = pt.decode_config(D, torch.bfloat16, HQ // HKV, kv_fp8=True)
    sm = pt.sm_count(torch.device("cuda"))
    for batch, ctx in FP8_CASES:
        t = tensors(batch, ctx, ctx, torch.bfloat16)
        scale = D**-0.5
        k8, v8, ks, vs = fp8_caches(t, fp8)
        nhd, hnd = [k8, v8], [head_major(k8), head_major(v8)]
        ceil = copy_us(batch * ctx * HKV * D * 2)
        ws = workspace(batch, splits=128)
        bf16_us = graph_us(
            lambda: pt.paged_decode(t["q"], t["kc"], t["vc"], t["bt"], t["lens"], scale, t["out"], workspace=ws)
        )
        print(f"{batch}x{ctx}: ceiling {ceil:.1f} us, bf16 default (token-major) {bf16_us:.1f} us", flush=True)
        for layout, (k8, v8) in (("head-major", hnd), ("token-major", nhd)):
            for point in HND_POINTS:
                cfg = dataclasses.replace(base, **point)

                def call(cfg: pt.DecodeConfig = cfg, k8: torch.Tensor = k8, v8: torch.Tensor = v8) -> None:
                    pt.paged_decode(
                        t["q"], k8, v8, t["bt"], t["lens"], scale, t["out"], cfg=cfg, workspace=ws, k_scale=ks,
                        v_scale=vs,
                    )  # fmt: skip

                us = graph_us(call)
                splits = pt.decode_splits(batch, HKV, ctx, sm, cfg)[0]
                tag = " ".join(f"{k}={v}" for k, v in point.items()) or "default"
                rows.append({"case": f"{batch}x{ctx}", "kind": f"fp8 {layout} {tag}", "us": us, "ceiling_us": ceil,
                             "bf16_us": bf16_us, "splits": splits})  # fmt: skip
                print(f"  {batch}x{ctx} fp8 {layout} {tag} ({splits} splits): {us:.1f} us, {bf16_us / us:.2f}x bf16, "
                      f"{100 * ceil / us:.0f} % of copy", flush=True)  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", type=Path)
    ap.add_argument("--width", type=int, default=8448, help="block-table width in tokens of part 1")
    ap.add_argument("--skip-fp8", action="store_true")
    ap.add_argument("--fp8-only", action="store_true", help="part 2 only")
    ap.add_argument("--hnd-sweep", action="store_true", help="part 3 only: fp8 head-major configurations")
    ap.add_argument("--cases", help="part 1 cases, e.g. 1x8192,8x8192 (default all)")
    args = ap.parse_args()
    print(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}")
    cases = [tuple(map(int, c.split("x"))) for c in args.cases.split(",")] if args.cases else CASES
    full = not (args.fp8_only or args.hnd_sweep)
    rows = part3() if args.hnd_sweep else part1(args.width, cases) if full else []  # type: ignore[arg-type]
    if not args.skip_fp8 and not args.hnd_sweep:
        rows += part2()
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
