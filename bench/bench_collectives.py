"""Collectives through the HAL vs raw torch.distributed, measured in the same processes.

    python bench/bench_collectives.py --provider cpu  --nproc 2 --out results/    # gloo
    python bench/bench_collectives.py --provider cuda --nproc 2 --out results/    # NCCL, one GPU per rank

Two measurements:

1. The HAL's added time per call, measured without the network on one-rank sub-groups (raw
   ``dist.all_reduce(x, group=solo)`` vs ``provider.all_reduce(x, group=solo)``). This is what the
   HAL costs; divided by a size's raw time it bounds the HAL's overhead at that size.
2. Paired rounds over the real group: each round times K raw calls and K HAL calls back to back,
   alternating which goes first; the median of the per-round HAL/raw ratios is reported. (On the
   2-core CI machine raw gloo latency swings by +-30 % between runs, so medians of separate runs
   cannot resolve a few per cent; paired ratios can, roughly.)

The HAL runs with ``check_consistency=False``: the default consistency check adds one small
collective per call, measured by ``bench/bench_comm_check.py``. all_reduce is in place on a
preallocated tensor on both sides. all_gather is measured twice:
into a preallocated output on both sides (HAL ``out=``), and with a new output per call on both
sides. CPU ranks are pinned to their own core. Rank 0 writes ``collectives_<provider>.json`` /
``.md`` to ``--out``.
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

SIZES_GLOO = [8, 64, 512, 4 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20]
SIZES_NCCL = [8, 64, 512, 4 << 10, 64 << 10, 256 << 10, 1 << 20, 16 << 20, 64 << 20, 256 << 20, 1 << 30]


def _calls(nbytes: int, device: bool) -> int:
    budget = (32 << 20) if not device else (4 << 30)
    return int(max(2, min(200 if device else 20, budget // max(nbytes, 1))))


def _cases(p, t: torch.Tensor, gathered: torch.Tensor, world: int, dev: str) -> dict:
    """(raw, HAL) callables per measured case, bound to this size's tensors."""
    flat = gathered.view(-1)
    return {
        "all_reduce": (lambda: dist.all_reduce(t), lambda: p.all_reduce(t, "sum")),
        "all_gather": (lambda: dist.all_gather_into_tensor(flat, t), lambda: p.all_gather(t, out=gathered)),
        "all_gather_alloc": (
            lambda: dist.all_gather_into_tensor(torch.empty(world * t.numel(), device=dev), t),
            lambda: p.all_gather(t),
        ),
    }


def worker(rank: int, port: int, world: int, provider_name: str, out: str, rounds: int, quick: bool) -> None:
    device = provider_name == "cuda"
    if device:  # the raw side waits for each collective on the host too, like the HAL does
        os.environ.setdefault("TORCH_NCCL_BLOCKING_WAIT", "1")
    # The HAL's own cost; the consistency check's is bench_comm_check.py's subject.
    p = rank_provider(rank, world, port, provider_name, check_consistency=False)
    dev = p.device
    sync = torch.cuda.synchronize if device else (lambda: None)

    # 1) The HAL's added time per call, without the network: a one-rank sub-group per rank.
    solo = [p.new_group([r]) for r in range(world)][rank]
    x = torch.ones(2, device=dev)
    probe_raw, probe_hal = [], []
    for _ in range(3 * rounds):
        probe_raw.append(per_call(lambda: dist.all_reduce(x, group=solo.handle), 200, sync))
        probe_hal.append(per_call(lambda: p.all_reduce(x, "sum", group=solo), 200, sync))
    added_us = (statistics.median(probe_hal) - statistics.median(probe_raw)) * 1e6

    # 2) Paired rounds over the real group, alternating which side goes first.
    sizes = SIZES_NCCL if device else SIZES_GLOO
    if quick:
        sizes = [s for s in sizes if s <= (16 << 20)]
    rows = []
    for nbytes in sizes:
        n = max(1, nbytes // 4)
        t = torch.randn(n, device=dev)
        gathered = torch.empty((world, n), device=dev)
        k = _calls(nbytes, device)
        cases = _cases(p, t, gathered, world, dev)
        row: dict[str, float] = {"bytes": nbytes, "calls": k}
        for name, (raw_fn, hal_fn) in cases.items():
            raw_fn(), hal_fn(), raw_fn(), hal_fn()
            raws, hals, ratios = [], [], []
            for r in range(rounds):
                first, second = (raw_fn, hal_fn) if r % 2 == 0 else (hal_fn, raw_fn)
                a = per_call(first, k, sync)
                b = per_call(second, k, sync)
                raw_t, hal_t = (a, b) if r % 2 == 0 else (b, a)
                raws.append(raw_t)
                hals.append(hal_t)
                ratios.append(hal_t / raw_t)
            row[f"{name}_raw_us"] = statistics.median(raws) * 1e6
            row[f"{name}_hal_us"] = statistics.median(hals) * 1e6
            row[f"{name}_ratio"] = statistics.median(ratios)
        t.fill_(1.0)
        p.all_reduce(t, "sum")
        assert float(t[0]) == float(world), "all_reduce produced a wrong sum"
        row["all_reduce_busbw_GBps"] = nbytes / (row["all_reduce_raw_us"] / 1e6) * 2 * (world - 1) / world / 1e9
        rows.append(row)
        if rank == 0:
            print(
                f"{nbytes:>11,} B  all_reduce raw {row['all_reduce_raw_us']:9.1f} us  paired HAL/raw "
                f"{row['all_reduce_ratio']:.3f}  all_gather raw {row['all_gather_raw_us']:9.1f} us  "
                f"HAL/raw {row['all_gather_ratio']:.3f}",
                flush=True,
            )
    if rank == 0:
        meta = {
            "provider": provider_name,
            "backend": dist.get_backend(),
            "world": world,
            "rounds": rounds,
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "torch": torch.__version__,
            "device": p.capability().device_name,
            "cpu_cores": os.cpu_count(),
            "hal_added_us": added_us,
            "env": {k: os.environ.get(k) for k in ("TORCH_NCCL_BLOCKING_WAIT", "NCCL_NVLS_ENABLE")},
        }
        Path(out).mkdir(parents=True, exist_ok=True)
        Path(out, f"collectives_{provider_name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
        lines = [
            f"Collectives, {provider_name} ({meta['backend']}), {world} ranks, {meta['device']}, "
            f"torch {meta['torch']}, {meta['date']}, {rounds} paired rounds per size.",
            "",
            f"HAL time added per call, measured on one-rank sub-groups (no network): **{added_us:.2f} us**.",
            "",
            "| bytes | all_reduce raw (us) | HAL/raw (paired median) | added bound | all_gather raw (us) "
            "| HAL/raw, out= | HAL/raw, new output |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            bound = max(added_us, 0.0) / r["all_reduce_raw_us"] * 100
            lines.append(
                f"| {int(r['bytes']):,} | {r['all_reduce_raw_us']:.1f} | {r['all_reduce_ratio']:.3f} | "
                f"{bound:.2f}% | {r['all_gather_raw_us']:.1f} | {r['all_gather_ratio']:.3f} | "
                f"{r['all_gather_alloc_ratio']:.3f} |"
            )
        Path(out, f"collectives_{provider_name}.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
    p.barrier()
    p.destroy_process_group()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--provider", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--out", default="results")
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    spawn(worker, a.nproc, a.nproc, a.provider, a.out, a.rounds, a.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
