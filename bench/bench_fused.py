"""Fused engine kernels (Triton) vs torch eager, torch.compile and a copy ceiling; prints a markdown table.

    python bench/bench_fused.py                      # table on stdout
    python bench/bench_fused.py --out results/       # also h100-style fused_kernels.md / .json there
    python bench/bench_fused.py --sweep              # launch-parameter sweep of the Triton kernels first

See sagellm_backend.bench.fused for what is measured and how bytes are counted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from sagellm_backend.bench.fused import (
    HIDDEN,
    INTERMEDIATE,
    TOKENS,
    bench_fused_kernels,
    fused_table,
)
from sagellm_backend.bench.timing import device_time_per_call
from sagellm_backend.kernels import triton_ops

NORM_CONFIGS = [(4096, rows, warps) for rows in (1, 2, 4) for warps in (4, 8, 16)]
SILU_CONFIGS = [(block, 1, warps) for block in (512, 1024, 2048, 4096) for warps in (2, 4, 8)]


def sweep() -> str:
    """Device time (CUDA graph) of each launch configuration per op and token count; markdown."""
    lines = [
        "| op | tokens | default (BLOCK, ROWS, warps) | default us | best | best us | all (us) |",
        "|---|---:|---|---:|---|---:|---|",
    ]
    dev = "cuda"
    for tokens in TOKENS:
        x = torch.randn(tokens, HIDDEN, device=dev, dtype=torch.bfloat16)
        r, w = torch.randn_like(x), torch.randn(HIDDEN, device=dev, dtype=torch.bfloat16)
        gu = torch.randn(tokens, 2 * INTERMEDIATE, device=dev, dtype=torch.bfloat16)
        ops = [
            ("rmsnorm", "norm", NORM_CONFIGS, lambda: triton_ops.rmsnorm(x, w), triton_ops.norm_config(tokens, HIDDEN)),
            (
                "add_rmsnorm",
                "norm",
                NORM_CONFIGS,
                lambda: triton_ops.add_rmsnorm(x, r, w),
                triton_ops.norm_config(tokens, HIDDEN),
            ),
            (
                "silu_mul",
                "silu_mul",
                SILU_CONFIGS,
                lambda: triton_ops.silu_mul(gu),
                triton_ops.silu_mul_config(tokens, INTERMEDIATE),
            ),
        ]
        for op, key, configs, fn, default in ops:
            us = {}
            triton_ops._OVERRIDE.pop(key, None)
            base = (device_time_per_call(fn, quick=True) or 0.0) * 1e6
            for cfg in configs:
                triton_ops._OVERRIDE[key] = cfg
                us[cfg] = (device_time_per_call(fn, quick=True) or 0.0) * 1e6
            triton_ops._OVERRIDE.pop(key, None)
            best = min(us, key=us.__getitem__)
            cells = ", ".join(f"{c}: {v:.1f}" for c, v in sorted(us.items(), key=lambda kv: kv[1]))
            lines.append(f"| {op} | {tokens} | {default} | {base:.1f} | {best} | {us[best]:.1f} | {cells} |")
            print(lines[-1], file=sys.stderr, flush=True)
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sweep", action="store_true", help="sweep the Triton launch parameters first")
    ap.add_argument("--no-bench", action="store_true", help="only the sweep")
    ap.add_argument("--out", help="directory for fused_kernels.md / .json")
    args = ap.parse_args()
    when = time.strftime("%Y-%m-%d %H:%M")
    machine = f"{torch.cuda.get_device_name(args.device)}, torch {torch.__version__}"
    try:
        import triton

        machine += f", triton {triton.__version__}"
    except ImportError:
        pass
    parts = [f"Machine: {machine}  \nDate: {when}  \nCommand: `python bench/bench_fused.py {' '.join(sys.argv[1:])}`\n"]
    if args.sweep:
        parts.append("## Launch-parameter sweep (Triton, device us per call)\n\n" + sweep() + "\n")
    results = []
    if not args.no_bench:
        results = bench_fused_kernels(args.device, quick=args.quick)
        parts.append("## Fused kernels, GB/s (bytes read + written)\n\n" + fused_table(results) + "\n")
    md = "\n".join(parts)
    print(md)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "fused_kernels.md").write_text(md, encoding="utf-8")
        (out / "fused_kernels.json").write_text(
            json.dumps({"machine": machine, "date": when, "results": [r.to_dict() for r in results]}, indent=2),
            encoding="utf-8",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
