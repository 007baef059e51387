"""fp8 (e4m3) and bf16 paged decode time against context at fixed batch, every launch replayed from a CUDA graph:
a least-squares line through the points gives each kernel's streaming rate (slope, against the copy rate measured
here) and its fixed cost per launch (intercept): which of the two keeps fp8 below 90 % of the copy rate at 4 x 32k.

    PYTHONPATH=src python bench/probe_fp8_fixed.py [--json FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from sagellm_backend.attention import paged_triton as pt
from sagellm_backend.attention.kv_quant import fp8_dtype
from tune_decode_chunk import HKV, HQ, D, copy_us, fp8_caches, graph_us, head_major, tensors, workspace

SERIES = {4: (8192, 16384, 32768, 65536), 64: (1024, 2048, 4096, 8192)}


def fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares ``(slope, intercept)``."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return slope, my - slope * mx


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    fp8 = fp8_dtype("fp8_e4m3")
    base = pt.decode_config(D, torch.bfloat16, HQ // HKV, kv_fp8=True)
    points: dict[str, dict[str, Any]] = {"fp8 default": {}, "fp8 88 regs, 5 waves": {"maxnreg": 88, "waves": 5.0}}
    rows: list[dict[str, Any]] = []
    per_mb = copy_us(1 << 28) / 256  # microseconds per MiB read at the copy rate
    print(f"copy rate: {1.048576 / per_mb:.2f} TB/s (read + written)")
    for batch, ctxs in SERIES.items():
        series: dict[str, list[tuple[float, float]]] = {}
        for ctx in ctxs:
            t = tensors(batch, ctx, ctx, torch.bfloat16)
            nhd_k, nhd_v, ks, vs = fp8_caches(t, fp8)
            k8, v8 = head_major(nhd_k), head_major(nhd_v)
            ws = workspace(batch, splits=128)
            mib = batch * ctx * HKV * D * 2 / 2**20  # fp8 bytes
            us = graph_us(
                lambda: pt.paged_decode(t["q"], t["kc"], t["vc"], t["bt"], t["lens"], 0.1, t["out"], workspace=ws)
            )
            series.setdefault("bf16 default", []).append((2 * mib, us))
            for name, point in points.items():
                cfg = dataclasses.replace(base, **point)
                us = graph_us(
                    lambda cfg=cfg: pt.paged_decode(
                        t["q"], k8, v8, t["bt"], t["lens"], 0.1, t["out"], cfg=cfg, workspace=ws, k_scale=ks,
                        v_scale=vs,
                    )
                )  # fmt: skip
                series.setdefault(name, []).append((mib, us))
        for name, pts in series.items():
            slope, icpt = fit([p[0] for p in pts], [p[1] for p in pts])
            cells = ", ".join(f"{m:.0f} MiB {u:.1f} us ({100 * per_mb * m / u:.0f} %)" for m, u in pts)
            print(f"batch {batch} {name}: {cells}; rate {100 * per_mb / slope:.0f} % of copy, fixed {icpt:.1f} us")
            rows.append({"batch": batch, "kind": name, "points": pts, "slope_us_per_mib": slope, "fixed_us": icpt})
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
