"""Programmatic dependent launch (``DecodeConfig.pdl``) on and off, in one process: decode kernel time replayed from
a CUDA graph, fp8 e4m3 and bf16, 64 x 4k and 4 x 32k (32/8 heads, head 128, 16-token pages, token- and head-major),
and the step's pattern (a GEMM writing the query, then the fused store-and-decode), with the outputs of both
settings compared bit for bit.

    PYTHONPATH=src python3 bench/probe_pdl.py [--json FILE] [--rounds 3]

Each round times every point with PDL off then on, so drift on the host or GPU falls on both alike; the ceiling is
the fp8 KV bytes at the rate of a device copy measured in the same run (``tune_decode_chunk.copy_us``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sagellm_backend.attention import paged_triton as pt
from sagellm_backend.attention.kv_quant import fp8_dtype
from tune_decode_chunk import HKV, HQ, D, copy_us, fp8_caches, graph_us, head_major, tensors, workspace

CASES = [(64, 4096), (4, 32768)]


def points(batch: int, ctx: int) -> list[tuple[str, Any, pt.DecodeConfig]]:
    """``(label, call(cfg), default config)`` of one case: fp8 and bf16 over both page layouts, and the step's
    pattern."""
    t = tensors(batch, ctx, ctx, torch.bfloat16)
    k8, v8, ks, vs = fp8_caches(t, fp8_dtype("fp8_e4m3"))
    ws = workspace(batch, splits=128)
    scale = D**-0.5
    out: list[tuple[str, Any, pt.DecodeConfig]] = []
    layouts = {
        "token-major": (k8, v8, t["kc"], t["vc"]),
        "head-major": tuple(map(head_major, (k8, v8, t["kc"], t["vc"]))),
    }
    for layout, (fk, fv, bk, bv) in layouts.items():
        for kind, kc, vc, sc in (("fp8", fk, fv, {"k_scale": ks, "v_scale": vs}), ("bf16", bk, bv, {})):
            base = pt.decode_config(D, torch.bfloat16, HQ // HKV, kv_fp8=kind == "fp8")

            def call(cfg: pt.DecodeConfig, kc: torch.Tensor = kc, vc: torch.Tensor = vc, sc: dict = sc) -> Any:
                return pt.paged_decode(t["q"], kc, vc, t["bt"], t["lens"], scale, t["out"], cfg=cfg, workspace=ws, **sc)

            out.append((f"{kind} {layout}", call, base))
    # The step's pattern: the QKV projection writes q/k/v, then the fused store-and-decode reads them.
    x = torch.randn(batch, 4096, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(4096, (HQ + 2 * HKV) * D, device="cuda", dtype=torch.bfloat16) * 0.02
    qkv = torch.empty(batch, (HQ + 2 * HKV) * D, device="cuda", dtype=torch.bfloat16)
    n_slots = t["kc"].shape[0] * t["kc"].shape[1]
    slots = torch.arange(batch, device="cuda", dtype=torch.int64) * (n_slots // batch) + (ctx - 1) % 16
    o = torch.empty(batch, HQ, D, device="cuda", dtype=torch.bfloat16)
    base = pt.decode_config(D, torch.bfloat16, HQ // HKV)

    def step(cfg: pt.DecodeConfig) -> Any:
        torch.matmul(x, w, out=qkv)
        q, k, v = qkv.split([HQ * D, HKV * D, HKV * D], dim=1)
        pt.paged_decode_store(
            q.view(batch, HQ, D), k.view(batch, HKV, D), v.view(batch, HKV, D), t["kc"], t["vc"], t["bt"], t["lens"],
            slots, scale, o, cfg=cfg, workspace=ws,
        )  # fmt: skip
        return o

    out.append(("bf16 GEMM + fused decode", step, base))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    rows: list[dict[str, Any]] = []
    for batch, ctx in CASES:
        ceil = copy_us(batch * ctx * HKV * D * 2)
        print(f"{batch}x{ctx}: ceiling (fp8 bytes at the copy rate) {ceil:.1f} us", flush=True)
        for label, call, base in points(batch, ctx):  # the default is off: both set explicitly
            on, off = dataclasses.replace(base, pdl=True), dataclasses.replace(base, pdl=False)
            results = []
            for cfg in (off, on):
                results.append(call(cfg).clone())
            same = bool(torch.equal(results[0], results[1]))
            times: dict[str, list[float]] = {"off": [], "on": []}
            for _ in range(args.rounds):
                for name, cfg in (("off", off), ("on", on)):
                    times[name].append(graph_us(lambda cfg=cfg: call(cfg)))
            t_off, t_on = statistics.median(times["off"]), statistics.median(times["on"])
            scale = 1 if label.startswith("fp8") else 2
            print(f"  {label}: off {t_off:.1f} us, on {t_on:.1f} us ({t_off / t_on:.3f}x); % of copy off "
                  f"{100 * ceil * scale / t_off:.1f}, on {100 * ceil * scale / t_on:.1f}; equal {same}; "
                  f"rounds off {[round(v, 1) for v in times['off']]} on {[round(v, 1) for v in times['on']]}",
                  flush=True)  # fmt: skip
            rows.append({"case": f"{batch}x{ctx}", "kind": label, "off_us": t_off, "on_us": t_on, "ceiling_us": ceil,
                         "equal": same, "off_all": times["off"], "on_all": times["on"]})  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
