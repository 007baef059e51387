"""Decode kernel time against the split count over a block table 8,448 tokens wide (what the decode step's graph
holds), bf16 and fp8 e4m3 (token-major pages, 32/8 heads, head 128, 16-token pages), each launch replayed from a
CUDA graph: the mixed batch (64 lengths drawn uniformly from 1..8k), 64 x 8k, 64 x 1k and 8 x 8k.

    PYTHONPATH=src python3 bench/probe_mixed_split.py [--json FILE]

At batch 64 the default is one split (64 x 8 programs fill the GPU), so a mixed batch waits on its longest
sequence, walked by one program per KV head; the question is what more splits cost where lengths are equal and
gain where they are not. The ceiling is the KV bytes of the lengths at the rate of a device copy of the same run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sagellm_backend.attention import paged_triton as pt
from sagellm_backend.attention.kv_quant import fp8_dtype
from tune_decode_chunk import HKV, HQ, D, copy_us, fp8_caches, graph_us, tensors, workspace

WIDTH = 8448
CASES: list[tuple[str, int, int, bool]] = [
    ("64 mixed<=8k", 64, 8192, True), ("64x8k", 64, 8192, False), ("64x1k", 64, 1024, False), ("8x8k", 8, 8192, False),
]  # fmt: skip
SPLITS: list[int | None] = [None, 2, 3, 4, 6]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    print(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    rows: list[dict[str, Any]] = []
    sm = pt.sm_count(torch.device("cuda"))
    for name, batch, ctx, mixed in CASES:
        t = tensors(batch, ctx, WIDTH, torch.bfloat16)
        if mixed:
            g = torch.Generator(device="cuda").manual_seed(11)
            t["lens"] = torch.randint(1, ctx + 1, (batch,), device="cuda", generator=g, dtype=torch.int32)
        k8, v8, ks, vs = fp8_caches(t, fp8_dtype("fp8_e4m3"))
        tokens = int(t["lens"].sum())
        ws = workspace(batch, splits=max(s or 1 for s in SPLITS) * 4)
        scale = D**-0.5
        for kind, kc, vc, sc, per_token in (
            ("bf16", t["kc"], t["vc"], {}, 2 * 2), ("fp8", k8, v8, {"k_scale": ks, "v_scale": vs}, 2)
        ):  # fmt: skip
            ceil = copy_us(tokens * HKV * D * per_token)
            base = pt.decode_config(D, torch.bfloat16, HQ // HKV, kv_fp8=kind == "fp8")
            default = pt.decode_splits(batch, HKV, WIDTH, sm, base)[0]
            ref = None
            parts = [f"{name} {kind} (ceiling {ceil:.1f} us, default {default} splits)"]
            for n in SPLITS:

                def call(n: int | None = n, kc: Any = kc, vc: Any = vc, sc: dict[str, Any] = sc) -> Any:
                    return pt.paged_decode(
                        t["q"], kc, vc, t["bt"], t["lens"], scale, t["out"], splits=n, workspace=ws, **sc
                    )

                out = call().clone()
                ref = out if ref is None else ref
                err = float((out.float() - ref.float()).abs().max())
                us = graph_us(call)
                rows.append({"case": name, "kind": kind, "splits": n or default, "us": us, "ceiling_us": ceil,
                             "max_abs_diff_vs_default": err})  # fmt: skip
                parts.append(f"{n or default}: {us:.1f} us ({100 * ceil / us:.0f} %, diff {err:.1e})")
            print(" | ".join(parts), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
