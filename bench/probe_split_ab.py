"""Default decode launches, bf16 and fp8 e4m3 (token-major pages, 32/8 heads, head 128, 16-token pages), each
replayed from a CUDA graph, for comparing two source trees in neighbouring processes (``PYTHONPATH=old_src`` then
``PYTHONPATH=src``): the split launches of small batches in the block table a decode step's graph holds.

    PYTHONPATH=src python3 bench/probe_split_ab.py --label NAME

Prints one line per case: microseconds per launch, and a checksum of the output (equal trees give equal sums).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sagellm_backend.attention import paged_triton as pt
from sagellm_backend.attention.kv_quant import fp8_dtype
from tune_decode_chunk import D, fp8_caches, graph_us, tensors, workspace

# (name, batch, context, block-table width in tokens)
CASES = [("1x100", 1, 100, 8448), ("1x1k", 1, 1024, 8448), ("8x1k", 8, 1024, 8448), ("8x8k", 8, 8192, 8448),
         ("4x32k", 4, 32768, 32768)]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--label", default="")
    args = ap.parse_args()
    for name, batch, ctx, width in CASES:
        t = tensors(batch, ctx, width, torch.bfloat16)
        k8, v8, ks, vs = fp8_caches(t, fp8_dtype("fp8_e4m3"))
        ws = workspace(batch, splits=128)
        for kind, kc, vc, sc in (("bf16", t["kc"], t["vc"], {}), ("fp8", k8, v8, {"k_scale": ks, "v_scale": vs})):

            def call(kc: torch.Tensor = kc, vc: torch.Tensor = vc, sc: dict[str, torch.Tensor] = sc) -> None:
                pt.paged_decode(t["q"], kc, vc, t["bt"], t["lens"], D**-0.5, t["out"], workspace=ws, **sc)

            call()
            total = float(t["out"].float().sum())
            print(f"{args.label} {name} {kind}: {graph_us(call):.2f} us (sum {total:.6e})", flush=True)


if __name__ == "__main__":
    main()
