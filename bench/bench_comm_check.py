"""What the consistency check of collectives costs: all_reduce per call with the check (the default) and
without it (``check_consistency=False``), next to raw ``torch.distributed``, in the same processes.

    python bench/bench_comm_check.py --provider cpu --nproc 2            # gloo, prints a markdown table
    python bench/bench_comm_check.py --provider cuda --nproc 2 --out R/  # NCCL, one GPU per rank

The check exchanges a 16-int64 fingerprint (op, dtype, shape) with one all_gather before each
collective, so it adds about one small collective's latency per call. Each round times K calls of
each variant back to back, in a rotating order; the medians over rounds are reported. Rank 0 prints
the table and, with ``--out``, writes ``comm_check_<provider>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from dist_bench import per_call, rank_provider, spawn

SIZES = [4, 64, 1 << 10, 16 << 10, 256 << 10]  # bytes of float32 per rank


def worker(rank: int, port: int, world: int, provider_name: str, rounds: int, calls: int, out: str | None) -> None:
    device = provider_name == "cuda"
    p = rank_provider(rank, world, port, provider_name)
    sync = torch.cuda.synchronize if device else (lambda: None)
    rows = []
    for nbytes in SIZES:
        t = torch.ones(max(1, nbytes // 4), device=p.device)

        def hal(t: torch.Tensor = t) -> None:
            p.all_reduce(t, "sum")

        def raw(t: torch.Tensor = t) -> None:
            dist.all_reduce(t)

        # (flag set before the timed calls, through the public call on the existing group; the call)
        variants = {"raw": (None, raw), "checked": (True, hal), "unchecked": (False, hal)}
        times: dict[str, list[float]] = {name: [] for name in variants}
        names = list(variants)
        for r in range(rounds + 1):  # round 0 warms up
            for name in names[r % 3 :] + names[: r % 3]:
                flag, fn = variants[name]
                if flag is not None:
                    p.init_process_group(check_consistency=flag)
                took = per_call(fn, calls, sync)
                if r:
                    times[name].append(took)
        row = {"bytes": nbytes, **{f"{name}_us": statistics.median(ts) * 1e6 for name, ts in times.items()}}
        rows.append(row)
        t.fill_(1.0)
        p.all_reduce(t)
        assert float(t[0]) == float(world), "all_reduce produced a wrong sum"
    p.init_process_group(check_consistency=True)
    if rank == 0:
        meta = {
            "provider": provider_name,
            "backend": dist.get_backend(),
            "world": world,
            "rounds": rounds,
            "calls_per_round": calls,
            "torch": torch.__version__,
            "device": p.capability().device_name,
            "cpu_cores": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d %H:%M"),
        }
        lines = [
            f"all_reduce per call, {provider_name} ({meta['backend']}), {world} ranks, {meta['device']}, "
            f"torch {meta['torch']}, {meta['date']}; medians of {rounds} rounds x {calls} calls.",
            "",
            "| bytes per rank | raw torch.distributed (us) | HAL, check on (default) (us) | HAL, check off (us) "
            "| check costs (us) | on / off |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            lines.append(
                f"| {r['bytes']:,} | {r['raw_us']:.1f} | {r['checked_us']:.1f} | {r['unchecked_us']:.1f} | "
                f"{r['checked_us'] - r['unchecked_us']:.1f} | {r['checked_us'] / r['unchecked_us']:.2f}x |"
            )
        print("\n".join(lines), flush=True)
        if out:
            Path(out).mkdir(parents=True, exist_ok=True)
            Path(out, f"comm_check_{provider_name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    p.barrier()
    p.destroy_process_group()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--provider", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--calls", type=int, default=50)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    spawn(worker, a.nproc, a.nproc, a.provider, a.rounds, a.calls, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
