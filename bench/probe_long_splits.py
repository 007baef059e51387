"""Decode kernel time with and without long splits (``DecodeConfig.long_splits``: only the spans of a batch longer
than ``long_ratio`` x its mean split, in pieces of at least ``long_piece`` x the mean), bf16 and fp8 e4m3 (token-major
pages, 32/8 heads, head 128, 16-token pages), in a block table 8,448 tokens wide (what the decode step's graph
holds), each launch replayed from a CUDA graph.

    PYTHONPATH=src python3 bench/probe_long_splits.py [--json FILE]

Cases: mixed batches (64 and 32 lengths drawn uniformly from 1..8k; 63 x 1k beside one 8k; 64 lengths of
900..1,100) and equal lengths (64 x 8k, 64 x 1k, 8 x 8k), where long splits must cost nothing. Points beside the
default: long-split settings, and split counts forced on every sequence (``N splits``; run 46's figures came from
``--cases "64 mixed<=8k" 64x8k 64x1k 8x8k --points "2 splits" "3 splits" "4 splits" "6 splits"``). The ceiling is the
KV bytes of the lengths at the rate of a device copy of the same run; every point's output is compared with the
default's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sagellm_backend.attention import paged_triton as pt
from sagellm_backend.attention.kv_quant import fp8_dtype
from tune_decode_chunk import HKV, HQ, D, copy_us, fp8_caches, tensors, timed_point, workspace

WIDTH = 8448
# (name, batch, context of the equal rows, how lengths are drawn)
CASES: list[tuple[str, int, int, str]] = [
    ("64 mixed<=8k", 64, 8192, "uniform"), ("32 mixed<=8k", 32, 8192, "uniform"), ("63x1k+8k", 64, 1024, "outlier"),
    ("64x1k+-10%", 64, 1024, "jitter"), ("64x8k", 64, 8192, "equal"), ("64x1k", 64, 1024, "equal"),
    ("8x8k", 8, 8192, "equal"),
]  # fmt: skip
# DecodeConfig fields over the default of the dtype: long splits off, then splits / ratio / piece.
POINTS: list[tuple[str, dict[str, Any]]] = [
    ("off", {"long_splits": 1}), ("4", {"long_splits": 4}), ("6", {"long_splits": 6}), ("8", {"long_splits": 8}),
    ("6 p.25", {"long_splits": 6, "long_piece": 0.25}), ("8 p.25", {"long_splits": 8, "long_piece": 0.25}),
    ("6 p1", {"long_splits": 6, "long_piece": 1.0}), ("6 r1.5", {"long_splits": 6, "long_ratio": 1.5}),
    ("2", {"long_splits": 2}),
    # Every sequence split the same number of times (run 46, the eleventh pass's probe_mixed_split.py).
    ("2 splits", {"splits": 2}), ("3 splits", {"splits": 3}), ("4 splits", {"splits": 4}), ("6 splits", {"splits": 6}),
    # Six splits forced with a floor no span reaches: one used split per sequence and five that do nothing, without
    # the kernel's long-span code (what the grid and its idle programs cost by themselves).
    ("z6 idle", {"splits": 6, "chunk_floor": 1 << 20}), ("z2 idle", {"splits": 2, "chunk_floor": 1 << 20}),
    # The default again, last: a drift over the case's points (clocks, heat) shows as a difference from "off".
    ("off again", {"long_splits": 1}),
]  # fmt: skip


def lengths(batch: int, ctx: int, how: str) -> torch.Tensor:
    """The case's lengths (int32, on the GPU)."""
    g = torch.Generator(device="cuda").manual_seed(11)
    if how == "uniform":
        return torch.randint(1, ctx + 1, (batch,), device="cuda", generator=g, dtype=torch.int32)
    if how == "jitter":
        return torch.randint(ctx * 9 // 10, ctx * 11 // 10 + 1, (batch,), device="cuda", generator=g, dtype=torch.int32)
    lens = torch.full((batch,), ctx, dtype=torch.int32, device="cuda")
    if how == "outlier":
        lens[batch // 2] = 8192
    return lens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--cases", nargs="*", help="case names to run (default all)")
    ap.add_argument("--points", nargs="*", help="point labels to run (default all; 'off' always runs first)")
    args = ap.parse_args()
    points = [p for p in POINTS if p[0] == "off" or not args.points or p[0] in args.points]
    print(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    rows: list[dict[str, Any]] = []
    for name, batch, ctx, how in (c for c in CASES if not args.cases or c[0] in args.cases):
        t = tensors(batch, ctx, WIDTH, torch.bfloat16)
        t["lens"] = lengths(batch, ctx, how)
        k8, v8, ks, vs = fp8_caches(t, fp8_dtype("fp8_e4m3"))
        tokens = int(t["lens"].sum())
        ws = workspace(batch, splits=64)
        scale = D**-0.5
        for kind, kc, vc, sc, per_token in (
            ("bf16", t["kc"], t["vc"], {}, 2 * 2), ("fp8", k8, v8, {"k_scale": ks, "v_scale": vs}, 2)
        ):  # fmt: skip
            ceil = copy_us(tokens * HKV * D * per_token)
            base = pt.decode_config(D, torch.bfloat16, HQ // HKV, kv_fp8=kind == "fp8")
            ref = None
            parts = [f"{name} {kind} (ceiling {ceil:.1f} us)"]
            for label, fields in points:
                fields = dict(fields)
                forced = fields.pop("splits", None)
                cfg = dataclasses.replace(base, **fields)

                def call(
                    cfg: pt.DecodeConfig = cfg, kc: Any = kc, vc: Any = vc, sc: dict[str, Any] = sc, n: Any = forced
                ) -> Any:
                    q, bt, lens, o = t["q"], t["bt"], t["lens"], t["out"]
                    return pt.paged_decode(q, kc, vc, bt, lens, scale, o, cfg=cfg, splits=n, workspace=ws, **sc)

                ref, err, us = timed_point(call, ref)
                splits = forced or pt.decode_splits(batch, HKV, WIDTH, pt.sm_count(torch.device("cuda")), cfg)[0]
                rows.append({"case": name, "kind": kind, "point": label, "splits": splits, "us": us,
                             "ceiling_us": ceil, "max_abs_diff_vs_off": err})  # fmt: skip
                parts.append(f"{label}: {us:.1f} ({100 * ceil / us:.0f} %, diff {err:.0e})")
            print(" | ".join(parts), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
