"""Where the GPU places the programs of a 3-D grid whose last axis holds idle programs: a probe for the loss of
decode launches whose later splits do nothing (``probe_wave_fit.py``'s "z2 idle": 12-20 % over fp8 at 32-64 x 8k,
whether or not the grid fits one wave).

Each program records its SM (``%smid``) and its start and end (``%globaltimer``); an active program spins for
``--spin-us``, an idle one exits. Grids ``(rows, 8, splits)`` with only split 0 active ("split last", the decode
kernel's order) and ``(splits, rows, 8)`` with only split 0 active ("split first"), at 4 and 16 warps per program
(4 and 16 warps: at most 16 and 4 resident programs per SM by threads). Prints, per grid, how many SMs hold an
active program and the most active programs on one SM.

    PYTHONPATH=src python3 bench/probe_sm_placement.py [--json FILE]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

import torch
import triton
import triton.language as tl


@triton.jit
def _place(rec_ptr, spin_ns, SPLIT_FIRST: tl.constexpr):  # type: ignore[no-untyped-def]  # a Triton JIT kernel
    p0 = tl.program_id(0)
    p1 = tl.program_id(1)
    p2 = tl.program_id(2)
    lin = p0 + tl.num_programs(0) * (p1 + tl.num_programs(1) * p2)
    if SPLIT_FIRST:  # noqa: SIM108  # a constexpr branch: only one side is compiled
        active = p0 == 0
    else:
        active = p2 == 0
    sm = tl.inline_asm_elementwise("mov.u32 $0, %smid;", "=r,r", [p0], dtype=tl.int32, is_pure=False, pack=1)
    t0 = tl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l,r", [p0], dtype=tl.int64, is_pure=False, pack=1)
    t = t0
    if active:
        while t - t0 < spin_ns:
            t = tl.inline_asm_elementwise(
                "mov.u64 $0, %globaltimer;", "=l,r", [p0], dtype=tl.int64, is_pure=False, pack=1
            )
    tl.store(rec_ptr + lin * 4, sm.to(tl.int64))
    tl.store(rec_ptr + lin * 4 + 1, active.to(tl.int64))
    tl.store(rec_ptr + lin * 4 + 2, t0)
    tl.store(rec_ptr + lin * 4 + 3, t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--spin-us", type=float, default=20.0)
    args = ap.parse_args()
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    print(f"device {torch.cuda.get_device_name()}, {sms} SMs", flush=True)
    rows: list[dict[str, Any]] = []
    for warps in (4, 16):
        for batch in (32, 64):
            for splits in (1, 2, 3):
                for first in (False, True):
                    if splits == 1 and first:
                        continue
                    grid = (splits, batch, 8) if first else (batch, 8, splits)
                    n = batch * 8 * splits
                    rec = torch.zeros(n * 4, dtype=torch.int64, device="cuda")
                    for _ in range(3):  # the last of three launches is kept
                        _place[grid](rec, int(args.spin_us * 1e3), SPLIT_FIRST=first, num_warps=warps)
                    torch.cuda.synchronize()
                    r = rec.view(n, 4).cpu()
                    act = r[r[:, 1] == 1]
                    per_sm = Counter(act[:, 0].tolist())
                    t0 = int(r[:, 2].min())
                    span_us = (int(act[:, 3].max()) - t0) / 1e3
                    late = int(((act[:, 2] - t0) > 1000).sum())  # active programs that started > 1 us late
                    row = {
                        "warps": warps,
                        "batch": batch,
                        "splits": splits,
                        "order": "split first" if first else "split last",
                        "programs": n,
                        "active": len(act),
                        "sms_with_active": len(per_sm),
                        "most_on_one_sm": max(per_sm.values()),
                        "active_started_late": late,
                        "span_us": span_us,
                        "first_ids_sm": r[:12, 0].tolist(),
                    }
                    rows.append(row)
                    print(
                        f"{warps} warps, grid {grid} ({row['order']}): {len(act)} active of {n} on "
                        f"{len(per_sm)} SMs (most {row['most_on_one_sm']}), {late} started late, span {span_us:.1f} us;"
                        f" SMs of programs 0-11: {row['first_ids_sm']}",
                        flush=True,
                    )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
