"""Cost of the header before every point-to-point payload (sagellm_backend.comm.p2p), two ranks.

    python bench/bench_p2p.py --provider cpu --out results/      # gloo
    python bench/bench_p2p.py --provider cuda --out results/     # NCCL, one GPU per rank

A ping-pong (rank 0 sends, rank 1 receives and sends back) of one message per size, timed as a
round trip, three ways in paired rounds (the order rotates each round):

* ``raw``: ``dist.send`` / ``dist.recv`` of the payload alone (the ceiling: no header, no checks);
* ``two_raw``: ``dist.send`` of a 128-byte int64 tensor, then of the payload (a header as a
  separate message, in torch.distributed alone);
* ``hal``: ``provider.send`` / ``provider.recv`` (argument checks + header + payload).

Reported: the median round trip of each and the medians of the per-round ratios to ``raw``.
Rank 0 writes ``p2p_<provider>.json`` / ``.md`` to ``--out``.
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

from dist_bench import rank_provider, spawn

SIZES = [4, 4 << 10, 16 << 10, 64 << 10, 1 << 20, 16 << 20]


def worker(rank: int, port: int, provider_name: str, out: str, rounds: int, inline: int | None) -> None:
    from sagellm_backend.comm import p2p

    if inline is not None:  # a protocol constant: both ranks set the same value
        p2p.INLINE_BYTES = inline
        p2p.FRAME_BYTES = p2p.HEADER_LEN * 8 + inline

    device = provider_name == "cuda"
    p = rank_provider(rank, 2, port, provider_name, pin=os.environ.get("P2P_PIN") == "1")
    dev = p.device
    sync = torch.cuda.synchronize if device else (lambda: None)
    peer = 1 - rank
    header = torch.zeros(16, dtype=torch.int64, device=dev)

    def pingpong(send, recv, t, k):
        sync()
        t0 = time.perf_counter()
        for _ in range(k):
            if rank == 0:
                send(t)
                recv(t)
            else:
                recv(t)
                send(t)
        sync()
        return (time.perf_counter() - t0) / k

    ways = {
        "raw": (lambda t: dist.send(t, peer), lambda t: dist.recv(t, peer)),
        "two_raw": (
            lambda t: (dist.send(header, peer), dist.send(t, peer)),
            lambda t: (dist.recv(header, peer), dist.recv(t, peer)),
        ),
        "hal": (lambda t: p.send(t, peer), lambda t: p.recv(t, peer)),
    }
    names = list(ways)
    rows = []
    for nbytes in SIZES:
        t = torch.ones(max(1, nbytes // 4), dtype=torch.float32, device=dev)
        k = int(max(3, min(200, (64 << 20) // nbytes)))
        for name in names:
            pingpong(*ways[name], t, 3)
        times: dict[str, list[float]] = {n: [] for n in names}
        for r in range(rounds):
            order = names[r % 3 :] + names[: r % 3]
            for name in order:
                times[name].append(pingpong(*ways[name], t, k))
        row = {"bytes": nbytes, "round_trips": k}
        for name in names:
            row[f"{name}_us"] = statistics.median(times[name]) * 1e6
        for name in ("two_raw", "hal"):
            row[f"{name}_ratio"] = statistics.median(a / b for a, b in zip(times[name], times["raw"]))
        rows.append(row)
        if rank == 0:
            print(
                f"{nbytes:>11,} B  raw {row['raw_us']:9.1f} us  header+payload {row['two_raw_us']:9.1f} us "
                f"({row['two_raw_ratio']:.3f}x)  HAL {row['hal_us']:9.1f} us ({row['hal_ratio']:.3f}x)",
                flush=True,
            )
    if rank == 0:
        meta = {
            "provider": provider_name,
            "backend": dist.get_backend(),
            "rounds": rounds,
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "torch": torch.__version__,
            "device": p.capability().device_name,
            "cpu_cores": os.cpu_count(),
            "inline_bytes": p2p.INLINE_BYTES,
        }
        Path(out).mkdir(parents=True, exist_ok=True)
        Path(out, f"p2p_{provider_name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
        lines = [
            f"send/recv ping-pong, {provider_name} ({meta['backend']}), {meta['device']}, torch {meta['torch']}, "
            f"{meta['date']}, {rounds} rounds, INLINE_BYTES {p2p.INLINE_BYTES}; round-trip medians, ratios are "
            "per-round medians against raw.",
            "",
            "| bytes | raw (us) | header + payload, raw (us) | ratio | provider.send/recv (us) | ratio |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            lines.append(
                f"| {int(r['bytes']):,} | {r['raw_us']:.1f} | {r['two_raw_us']:.1f} | {r['two_raw_ratio']:.3f} | "
                f"{r['hal_us']:.1f} | {r['hal_ratio']:.3f} |"
            )
        Path(out, f"p2p_{provider_name}.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
    p.barrier()
    p.destroy_process_group()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--provider", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--out", default="results")
    ap.add_argument("--inline", type=int, default=None, help="override p2p.INLINE_BYTES (both ranks)")
    a = ap.parse_args()
    spawn(worker, 2, a.provider, a.out, a.rounds, a.inline)
    return 0


if __name__ == "__main__":
    sys.exit(main())
