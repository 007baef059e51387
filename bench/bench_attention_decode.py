"""Paged decode vs gather-then-SDPA, measured in the same process in paired rounds.

    python bench/bench_attention_decode.py [--device cpu|cuda] [--threads N] [--seqs 8] [--ctx 1024]
                                           [--heads 8 --kv-heads 2 --head-dim 64 --block-size 16 --dtype float32]

Baseline: gather the pages of every sequence (``cache[block_tables]``), then one
``scaled_dot_product_attention`` with a length mask and ``enable_gqa``. Candidates: ``paged_torch.paged_decode``,
``paged_triton.paged_decode`` (CUDA, when it imports) and ``PagedAttentionBackend.forward`` (store of the new
token + decode, validation memoised per metadata). Each round times every variant back to back in a rotating
order; the best round and the median of per-round ratios to the baseline are reported. The caches are per-layer
views of a block-major arena with shuffled block tables, as the KV pool hands them out.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from sagellm_backend.attention import PagedAttentionBackend, PagedAttentionMetadataBuilder, paged_torch
from sagellm_backend.attention.reference import make_arena_caches, make_block_tables


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    ap.add_argument("--seqs", type=int, default=8)
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--calls", type=int, default=10)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    dev, dtype = torch.device(a.device), getattr(torch, a.dtype)
    b, n, hq, hkv, d, bs = a.seqs, a.ctx, a.heads, a.kv_heads, a.head_dim, a.block_size
    g = torch.Generator().manual_seed(0)
    num_blocks = b * (n // bs + 2) + 8
    _, kc, vc = make_arena_caches(num_blocks, bs, hkv, d, dtype, dev, generator=g, num_layers=2)
    table = make_block_tables([n + 1] * b, bs, num_blocks, generator=g, pad_value=0).to(dev)
    lens = torch.full((b,), n, dtype=torch.int64, device=dev)
    q = torch.randn(b, hq, d, generator=g).to(dtype=dtype, device=dev)
    k_new = torch.randn(b, hkv, d, generator=g).to(dtype=dtype, device=dev)
    scale = d**-0.5

    def gather_sdpa() -> torch.Tensor:
        nb = (int(lens.max()) + bs - 1) // bs
        t = table[:, :nb]
        k = kc[t].reshape(b, nb * bs, hkv, d).transpose(1, 2)
        v = vc[t].reshape(b, nb * bs, hkv, d).transpose(1, 2)
        m = (torch.arange(nb * bs, device=dev)[None] < lens[:, None])[:, None, None, :]
        o = F.scaled_dot_product_attention(q[:, :, None], k, v, attn_mask=m, scale=scale, enable_gqa=hq != hkv)
        return o[:, :, 0]

    backend = PagedAttentionBackend(bs)
    md = PagedAttentionMetadataBuilder(bs, device=dev).build_decode_metadata(
        context_lens=[n - 1] * b, block_tables=table
    )
    variants: dict[str, Callable[[], object]] = {
        "gather+SDPA": gather_sdpa,
        "paged_torch.paged_decode": lambda: paged_torch.paged_decode(q, kc, vc, table, lens, scale),
        "PagedAttentionBackend.forward": lambda: backend.forward(q, k_new, k_new, md, kv_cache=(kc, vc), scale=scale),
    }
    if dev.type == "cuda":
        try:
            from sagellm_backend.attention import paged_triton
        except ImportError:
            pass
        else:
            variants["paged_triton.paged_decode"] = lambda: paged_triton.paged_decode(q, kc, vc, table, lens, scale)
    ref = gather_sdpa().double()
    for name in ("paged_torch.paged_decode", "paged_triton.paged_decode"):
        if name in variants:
            out = variants[name]()
            assert isinstance(out, torch.Tensor)
            print(f"{name}: max |diff| vs baseline {float((out.double() - ref).abs().max()):.2e}")

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    times: dict[str, list[float]] = {k: [] for k in variants}
    names = list(variants)
    for r in range(a.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn = variants[name]
            fn()
            sync()
            t0 = time.perf_counter()
            for _ in range(a.calls):
                fn()
            sync()
            times[name].append((time.perf_counter() - t0) / a.calls * 1e3)
    base = times["gather+SDPA"]
    print(f"device={dev} threads={torch.get_num_threads()} B={b} ctx={n} Hq/Hkv={hq}/{hkv} D={d} bs={bs} {a.dtype}")
    print(f"{'variant':32s} {'best ms':>9s} {'median ratio to baseline':>26s}")
    for name, ts in times.items():
        ratio = statistics.median(t / s for t, s in zip(ts, base))
        print(f"{name:32s} {min(ts):9.3f} {ratio:26.2f}")


if __name__ == "__main__":
    main()
