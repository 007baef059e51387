"""Paged attention (Triton) against contiguous SDPA, gather-then-SDPA and compiled FlexAttention on one GPU.

    python bench/bench_paged_attention.py [--quick] [--no-flex] [--cases 2,3,4] [--out DIR]

Prints a markdown table (see ``sagellm_backend.bench.paged_attention`` for what each column measures); with
``--out`` also writes ``paged_attention.json`` and ``paged_attention.md`` there.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import triton

from sagellm_backend.bench import table
from sagellm_backend.bench.paged_attention import bench_case
from sagellm_backend.bench.paged_cases import CASES


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="three cases, no FlexAttention")
    ap.add_argument("--no-flex", action="store_true", help="skip compiled FlexAttention")
    ap.add_argument("--out", type=Path, help="directory for paged_attention.json / .md")
    ap.add_argument("--cases", help="comma-separated indices into CASES to run (default: all)")
    args = ap.parse_args()
    cases = list(CASES[:3] if args.quick else CASES)
    if args.cases:
        picked = [int(i) for i in args.cases.split(",")]
        if any(not 0 <= i < len(CASES) for i in picked):
            ap.error(f"--cases takes indices 0..{len(CASES) - 1}: {', '.join(c.label for c in CASES)}")
        cases = [CASES[i] for i in picked]
    machine = (
        f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}, "
        f"CUDA {torch.version.cuda}"
    )
    when = time.strftime("%Y-%m-%d %H:%M")
    results = []
    for case in cases:  # rows written as they finish
        results.append(bench_case(case, "cuda", flex=not (args.no_flex or args.quick)))
        md = table(results).replace("nan", "n/a")
        print(md.splitlines()[-1], flush=True)
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            doc = {"machine": machine, "date": when, "results": [r.to_dict() for r in results]}
            (args.out / "paged_attention.json").write_text(json.dumps(doc, indent=2))
            (args.out / "paged_attention.md").write_text(f"Machine: {machine}  \nDate: {when}\n\n{md}\n")
    print(f"\n{machine}, {when}\n\n{md}")


if __name__ == "__main__":
    main()
