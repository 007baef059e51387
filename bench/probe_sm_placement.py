"""Where the GPU places the programs of a 3-D grid whose last axis holds idle programs: a probe for the loss of
decode launches whose later splits do nothing (``probe_wave_fit.py``'s "z2 idle": 12-20 % over fp8 at 32-64 x 8k,
whether or not the grid fits one wave).

Each program records its SM (``%smid``) and its start and end (``%globaltimer``); an active program spins for
``--spin-us``, an idle one exits. Grids of rows x 8 KV heads x splits in which only split 0 works, in four orders:
``(rows, 8, splits)`` ("split last", the decode kernel's), the same with split 0 in the last slice ("split last,
reversed"), ``(rows, splits, 8)`` ("split middle") and ``(splits, rows, 8)`` ("split first"); 4 and 16 warps per
program (at most 16 and 4 resident programs per SM by threads). Prints, per grid, how many SMs hold a working
program and the most working programs on one SM.

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

from sagellm_backend.attention.triton_kernels import gpu_clock, sm_id


@triton.jit
def _place(rec_ptr, spin_ns, ORDER: tl.constexpr):  # type: ignore[no-untyped-def]  # a Triton JIT kernel
    p0 = tl.program_id(0)
    p1 = tl.program_id(1)
    p2 = tl.program_id(2)
    lin = p0 + tl.num_programs(0) * (p1 + tl.num_programs(1) * p2)
    # Which program is split 0 (the working one) under each order of the grid's axes.
    if ORDER == "split first":
        active = p0 == 0
    elif ORDER == "split middle":
        active = p1 == 0
    elif ORDER == "split last, reversed":
        active = p2 == tl.num_programs(2) - 1
    else:
        active = p2 == 0
    sm = sm_id(p0)
    t0 = gpu_clock(p0)
    t = t0
    if active:
        while t - t0 < spin_ns:
            t = gpu_clock(p0)
    tl.store(rec_ptr + lin * 4, sm.to(tl.int64))
    tl.store(rec_ptr + lin * 4 + 1, active.to(tl.int64))
    tl.store(rec_ptr + lin * 4 + 2, t0)
    tl.store(rec_ptr + lin * 4 + 3, t)


ORDERS = ("split last", "split last, reversed", "split middle", "split first")


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
                for order in ORDERS:
                    if splits == 1 and order != "split last":
                        continue
                    grid = {"split first": (splits, batch, 8), "split middle": (batch, splits, 8)}.get(
                        order, (batch, 8, splits)
                    )
                    n = batch * 8 * splits
                    rec = torch.zeros(n * 4, dtype=torch.int64, device="cuda")
                    for _ in range(3):  # the last of three launches is kept
                        _place[grid](rec, int(args.spin_us * 1e3), ORDER=order, num_warps=warps)
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
                        "order": order,
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
