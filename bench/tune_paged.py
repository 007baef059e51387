"""Sweep the paged-attention kernels' launch configurations on the benchmark cases of this GPU.

    python bench/tune_paged.py [--out DIR] [--quick]

Decode: (BLOCK_N, warps, stages) x split counts on both decode cases, in KV-read GB/s; prefill:
(BLOCK_M, BLOCK_N, warps, stages) on both prefill cases, in TFLOP/s. Contiguous SDPA of the same case
is measured beside them. Prints one line per point and writes ``tune_paged.json`` with ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from sagellm_backend.attention import paged_triton as pt
from sagellm_backend.attention import paged_triton_prefill as pp
from sagellm_backend.bench.paged_cases import CASES, build_case, sdpa_fn, time_cuda

DECODE = [(32, 4, 3), (64, 4, 2), (64, 4, 3), (128, 4, 2), (128, 4, 3)]
SPLITS = {64: [None, 1, 2], 4: [None, 8, 16, 32]}
PREFILL = [
    (64, 64, 4, 3), (64, 64, 4, 4), (64, 32, 4, 3), (128, 64, 8, 3), (128, 128, 8, 3), (64, 128, 4, 3),
    (128, 64, 8, 4),
]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    rows = []
    for case in (c for c in CASES if c.path == "kernel"):  # the backend row runs no tunable kernel
        t = build_case(case, "cuda")
        q, kc, vc, bt, lens, cu, scale = (t[k] for k in ("q", "kc", "vc", "bt", "seq_lens", "cu", "scale"))
        work, unit = case.work(), (1e9 if case.kind == "decode" else 1e12)
        sdpa, _ = sdpa_fn(case, t)
        ref = time_cuda(lambda: sdpa(t["k"], t["v"]))
        print(f"{case.label}: SDPA {work / ref / unit:.1f}", flush=True)
        out = torch.empty_like(q)
        points = []
        if case.kind == "decode":
            for bn, w, st in DECODE[:3] if args.quick else DECODE:
                for sp in SPLITS[case.batch]:
                    cfg = pt.DecodeConfig(bn, w, st)
                    points.append(
                        (
                            f"decode bn={bn} w={w} st={st} splits={sp}",
                            lambda cfg=cfg, sp=sp: pt.paged_decode_with(
                                q, kc, vc, bt, lens, scale, out, cfg=cfg, splits=sp
                            ),
                        )
                    )
        else:
            for bm, bn, w, st in PREFILL[:3] if args.quick else PREFILL:
                cfg = pp.PrefillConfig(bm, bn, w, st)
                points.append(
                    (
                        f"prefill bm={bm} bn={bn} w={w} st={st}",
                        lambda cfg=cfg: pp.paged_prefill_with(q, kc, vc, bt, cu, lens, scale, out, cfg=cfg),
                    )
                )
        for name, fn in points:
            try:
                v = work / time_cuda(fn, trials=5, target_s=0.015) / unit
            except Exception as e:  # out of resources etc.
                print(f"  {name}: failed {type(e).__name__}: {str(e)[:120]}", flush=True)
                v = math.nan
            else:
                print(f"  {name}: {v:.1f}", flush=True)
            rows.append({"case": case.label, "point": name, "value": v, "sdpa": work / ref / unit})
        torch.cuda.empty_cache()
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "tune_paged.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
