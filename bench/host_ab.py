"""Host microseconds of one decode-layer attention call through the public API only (so two source trees can be
compared in neighbouring processes: ``PYTHONPATH=old_src`` then ``PYTHONPATH=src``), batch 8 x 2k, 32/8 heads, head
128, bf16 (and an fp8 cache), distinct key and value tensors as an engine's QKV split gives: ``wrapper.run(out=)``,
``forward`` on reused metadata (allocating, into ``output=``), the same with a window and an fp8 cache, and a plain
torch op, sampled in rounds (``bench.decode_host.median_us_in_rounds``).

    PYTHONPATH=src python bench/host_ab.py [--label NAME]

Prints one markdown row per call.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import torch

from sagellm_backend.attention import PagedAttentionBackend, PagedAttentionMetadataBuilder, PagedAttentionWrapper
from sagellm_backend.bench.decode_host import median_us_in_rounds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--label", default="")
    ap.add_argument("--reps", type=int, default=300)
    a = ap.parse_args()
    dev = torch.device("cuda")
    hq, hkv, d, bs, batch, ctx = 32, 8, 128, 16, 8, 2048
    width = ctx // bs
    nb = batch * width + 1
    cache = tuple(torch.zeros(nb, bs, hkv, d, dtype=torch.bfloat16, device=dev) for _ in range(2))
    fp8 = tuple(torch.zeros(nb, bs, hkv, d, dtype=torch.float8_e4m3fn, device=dev) for _ in range(2))
    ks, vs = torch.ones(1, device=dev), torch.ones(1, device=dev)
    table = torch.randperm(nb - 1)[: batch * width].view(batch, width).to(torch.int32)
    q = torch.randn(batch, hq, d, device=dev, dtype=torch.bfloat16)
    k = torch.randn(batch, hkv, d, device=dev, dtype=torch.bfloat16)
    v = torch.randn(batch, hkv, d, device=dev, dtype=torch.bfloat16)
    out = torch.empty_like(q)
    lens = [ctx - 1] * batch
    md = PagedAttentionMetadataBuilder(bs, device=dev).build_decode_metadata(lens, table.to(dev))
    plain = PagedAttentionBackend(bs)
    variant = PagedAttentionBackend(bs, sliding_window=1024, kv_cache_dtype="fp8_e4m3")
    w = PagedAttentionWrapper(hq, hkv, d, block_size=bs, max_batch=batch, max_blocks_per_seq=width, device=dev)
    w.plan(lens, table, (table[:, -1].long() * bs + (ctx - 1) % bs).tolist())
    calls: dict[str, Callable[[], Any]] = {
        "torch op (reference)": lambda: torch.add(q, q, out=out),
        "wrapper.run(out=)": lambda: w.run(q, k, v, cache, out=out),
        "forward, same metadata": lambda: plain.forward(q, k, v, md, kv_cache=cache),
        "forward, same metadata, output=": lambda: plain.forward(q, k, v, md, kv_cache=cache, output=out),
        "forward, window + fp8 cache": lambda: variant.forward(q, k, v, md, kv_cache=fp8, k_scale=ks, v_scale=vs),
    }
    for fn in calls.values():
        fn()
        fn()
    us = median_us_in_rounds(calls, a.reps, torch.cuda.synchronize)
    print(f"| {a.label} | " + " | ".join(f"{us[n]:.1f}" for n in calls) + " |")


if __name__ == "__main__":
    main()
