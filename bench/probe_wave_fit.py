"""Does a decode launch lose when its grid holds more programs than fit the GPU at once, even where the extra programs
do nothing? Kernel alone, graph-replayed, fp8 e4m3 and bf16 (token-major pages, 32/8 heads, head 128), 8k tokens per
sequence in an 8,448-token table.

    PYTHONPATH=src python3 bench/probe_wave_fit.py [--json FILE]

Run 50 found grids of 2 and 6 splits in which every span uses only its first split ("z2 idle", "z6 idle" of
``probe_long_splits.py``) 12 % slower over fp8 at 64 x 8k (3 % in bf16) than the one-split grid, whatever the number
of idle programs, with the tile loop compiled to the same instructions. Points per batch: one split (the grid holds
``batch x 8`` programs), the same grid compiled as a split launch (``DIRECT`` off: the code of a split launch without
its extra programs), and 2 and 3 splits of which only the first is used. If the loss comes from the grid outgrowing
what the GPU holds at once (four or five programs per SM), it appears only where ``batch x 8 x splits`` exceeds that.
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
from sagellm_backend.kernels.triton_launch import launch
from tune_decode_chunk import HKV, HQ, D, copy_us, fp8_caches, tensors, timed_point, workspace

WIDTH, CTX = 8448, 8192


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--batches", nargs="*", type=int, default=[32, 40, 48, 64])
    ap.add_argument("--kinds", nargs="*", default=["fp8", "bf16"])
    args = ap.parse_args()
    sms = pt.sm_count(torch.device("cuda"))
    print(f"device {torch.cuda.get_device_name()}, {sms} SMs, torch {torch.__version__}", flush=True)
    rows: list[dict[str, Any]] = []
    for batch in args.batches:
        t = tensors(batch, CTX, WIDTH, torch.bfloat16)
        k8, v8, ks, vs = fp8_caches(t, fp8_dtype("fp8_e4m3"))
        ws = workspace(batch, splits=8)
        for kind in args.kinds:
            kc, vc, sc = (k8, v8, {"k_scale": ks, "v_scale": vs}) if kind == "fp8" else (t["kc"], t["vc"], {})
            ceil = copy_us(batch * CTX * HKV * D * (2 if kind == "fp8" else 4))
            base = pt.decode_config(D, torch.bfloat16, HQ // HKV, kv_fp8=kind == "fp8")
            idle = dataclasses.replace(base, chunk_floor=1 << 20)  # one used split per span

            def call(cfg: pt.DecodeConfig, n: int, direct: bool = True, kc: Any = kc, vc: Any = vc,
                     sc: dict[str, Any] = sc) -> Any:  # fmt: skip
                q, bt, lens, o = t["q"], t["bt"], t["lens"], t["out"]
                grid, a, kw = pt.decode_launch_args(q, kc, vc, bt, lens, D**-0.5, o, cfg=cfg, splits=n, workspace=ws,
                                                    **sc)  # fmt: skip
                kw["DIRECT"] = kw["DIRECT"] and direct
                launch(pt.decode_kernel, grid)(*a, **kw)
                return o

            parts = [f"{batch} x 8k {kind} (ceiling {ceil:.1f} us)"]
            ref = None
            for label, cfg, n, direct in (("1 split", base, 1, True), ("1 split, split code", base, 1, False),
                                          ("z2 idle", idle, 2, True), ("z3 idle", idle, 3, True),
                                          ("1 split again", base, 1, True)):  # fmt: skip
                ref, err, us = timed_point(lambda cfg=cfg, n=n, direct=direct: call(cfg, n, direct), ref)
                rows.append({"batch": batch, "kind": kind, "point": label, "programs": batch * HKV * n, "us": us,
                             "ceiling_us": ceil, "max_abs_diff": err})  # fmt: skip
                parts.append(
                    f"{label} [{batch * HKV * n} programs]: {us:.1f} ({100 * ceil / us:.0f} %, diff {err:.0e})"
                )
            print(" | ".join(parts), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
