"""Where the fixed cost of a split decode launch goes: about 10 us per launch at batch 4 (run 33's fit), which keeps
fp8 at 4 x 32k at 88-89 % of the copy rate. Kernel alone, graph-replayed, 4 sequences, 32/8 heads, head 128, in a
32k-token block table (the grid of the 4 x 32k row: the fill count of splits), fp8 e4m3 over head-major pages (the
fp8 row of issue 21) and bf16.

    PYTHONPATH=src python3 bench/probe_fixed_parts.py [--json FILE]

Points, each the same launch (grid, splits) over other lengths:

- ``empty``: every length 0. Split 0 of each span stores zeros, the rest do nothing: the launch, the programs'
  placement and their first loads.
- ``1 tile/split``: one 64-token tile for each split. Every split writes a partial and the last one merges them all:
  ``empty`` plus a tile's dependent loads (lengths, table, the tile) and the merge.
- ``1 tile/split, 1 split``: the same keys walked by one program per span (no partials, no merge): how much of the
  previous point is the merge.
- ``32k``: the row itself; its time less ``1 tile/split`` is the streaming.

The ceiling is the 32k row's KV bytes at the rate of a device copy of the same run.
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
from tune_decode_chunk import HKV, HQ, D, copy_us, fp8_caches, graph_us, head_major, tensors, workspace

BATCH, CTX = 4, 32768


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    print(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    t = tensors(BATCH, CTX, CTX, torch.bfloat16)
    k8, v8, ks, vs = fp8_caches(t, fp8_dtype("fp8_e4m3"))
    ws = workspace(BATCH, splits=64)
    rows: list[dict[str, Any]] = []
    for kind, kc, vc, sc, per_token in (
        ("fp8 head-major", head_major(k8), head_major(v8), {"k_scale": ks, "v_scale": vs}, 2),
        ("bf16", t["kc"], t["vc"], {}, 4),
    ):  # fmt: skip
        cfg = pt.decode_config(D, torch.bfloat16, HQ // HKV, kv_fp8=bool(sc))
        splits = pt.decode_splits(BATCH, HKV, CTX, pt.sm_count(torch.device("cuda")), cfg)[0]
        ceil = copy_us(BATCH * CTX * HKV * D * per_token)
        parts = [f"{kind}, {splits} splits (ceiling {ceil:.1f} us)"]
        for label, length, n in (("empty", 0, splits), ("1 tile/split", 64 * splits, splits),
                                 ("1 tile/split, 1 split", 64 * splits, 1), ("32k", CTX, splits)):  # fmt: skip
            lens = torch.full((BATCH,), length, dtype=torch.int32, device="cuda")

            def call(kc: Any = kc, vc: Any = vc, sc: dict[str, Any] = sc, lens: Any = lens, n: int = n) -> None:
                pt.paged_decode(t["q"], kc, vc, t["bt"], lens, D**-0.5, t["out"], cfg=cfg, splits=n, workspace=ws, **sc)

            us = graph_us(call)
            rows.append({"kind": kind, "point": label, "splits": n, "length": length, "us": us, "ceiling_us": ceil})
            parts.append(f"{label}: {us:.2f}")
        print(" | ".join(parts), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
