"""Host microseconds of the parts of one decode-layer attention call on CUDA (batch 8 x 2k, 32/8 heads, head 128,
16-token pages): ``PagedAttentionBackend.forward`` on reused metadata (allocating, and into ``output``),
``PagedAttentionWrapper.run(out=)``, and the pieces of forward's fast path timed alone (its property check, its
check of a caller's ``output``, the bound launch with and without ``out``, the stream queries the launch makes
without a workspace, the allocation), beside one plain torch op. Each timed as the mean of back-to-back calls in
rounds (median of rounds), the device drained between rounds.

    PYTHONPATH=src python bench/probe_forward_host.py [--trust-launcher 3.6|3.9] [--source FILE]

``--trust-launcher LAYOUT`` lets ``triton_raw.raw_launch`` call past the installed Triton's
``CudaLauncher.__call__`` with that argument layout even when its source is not one of ``RAW_LAUNCH_SOURCES`` (to
measure it before it is reviewed; ``--source`` writes that source to FILE for the review).
``SAGELLM_TRITON_RAW_LAUNCH=0`` measures without.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from sagellm_backend.attention import PagedAttentionBackend, PagedAttentionMetadataBuilder, PagedAttentionWrapper
from sagellm_backend.attention import paged_fast as P
from sagellm_backend.attention.diagnostics import count_attention_call
from sagellm_backend.kernels import triton_launch, triton_raw


def mean_us(fn: Callable[[], Any], n: int = 200, rounds: int = 7) -> float:
    """Median over ``rounds`` of the mean host time of ``n`` back-to-back calls."""
    out = []
    for _ in range(rounds):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        out.append((time.perf_counter() - t0) / n * 1e6)
    torch.cuda.synchronize()
    return statistics.median(out)


def main() -> None:
    import argparse
    import inspect
    from pathlib import Path

    import triton
    from triton.backends.nvidia.driver import CudaLauncher

    ap = argparse.ArgumentParser()
    ap.add_argument("--trust-launcher", choices=("3.6", "3.9"), help="the argument layout to assume")
    ap.add_argument("--source", type=Path)
    a = ap.parse_args()
    digest = triton_raw.launcher_source_digest(CudaLauncher)
    known = digest in triton_raw.RAW_LAUNCH_SOURCES
    print(f"triton {triton.__version__}, launcher source {digest} ({'reviewed' if known else 'not reviewed'}), "
          f"raw launches {'on' if triton_raw.RAW else 'off'}")  # fmt: skip
    if a.source:
        a.source.write_text(inspect.getsource(CudaLauncher.__call__))
    if a.trust_launcher and not known:
        triton_raw.RAW_LAUNCH_SOURCES[digest] = a.trust_launcher  # trusted by this probe, not reviewed
    dev = torch.device("cuda")
    hq, hkv, d, bs, batch, ctx = 32, 8, 128, 16, 8, 2048
    width = ctx // bs
    nb = batch * width + 1
    cache = tuple(torch.zeros(nb, bs, hkv, d, dtype=torch.bfloat16, device=dev) for _ in range(2))
    table = torch.randperm(nb - 1)[: batch * width].view(batch, width).to(torch.int32)
    q = torch.randn(batch, hq, d, device=dev, dtype=torch.bfloat16)
    k = torch.randn(batch, hkv, d, device=dev, dtype=torch.bfloat16)
    v = torch.randn_like(k)  # distinct from the key, as an engine's QKV split gives
    out = torch.empty_like(q)
    backend = PagedAttentionBackend(bs)
    md = PagedAttentionMetadataBuilder(bs, device=dev).build_decode_metadata([ctx - 1] * batch, table.to(dev))
    w = PagedAttentionWrapper(hq, hkv, d, block_size=bs, max_batch=batch, max_blocks_per_seq=width, device=dev)
    w.plan([ctx - 1] * batch, table, (table[:, -1].long() * bs + (ctx - 1) % bs).tolist())
    backend.forward(q, k, v, md, kv_cache=cache)
    backend.forward(q, k, v, md, kv_cache=cache)
    f = md.step_fast_paths[(id(backend), "ready")]
    pl = f.plan
    kc, vc = cache
    parts: dict[str, Callable[[], Any]] = {
        "torch.add into a buffer": lambda: torch.add(q, q, out=out),
        "forward, same metadata": lambda: backend.forward(q, k, v, md, kv_cache=cache),
        "forward, same metadata, output=": lambda: backend.forward(q, k, v, md, kv_cache=cache, output=out),
        "wrapper.run(out=)": lambda: w.run(q, k, v, cache, out=out),
        "  same_call": lambda: P.same_call(f, q, k, v, md, cache, None, None, None),
        "  output_apart": lambda: P.output_apart(f, out, q, k, v, kc, vc, None, None),
        "  count_attention_call": lambda: count_attention_call(f.record),
        "  os.environ.get": lambda: os.environ.get("SAGELLM_PAGED_ATTENTION_IMPL"),
        "  torch.empty_like": lambda: torch.empty_like(q),
        "  current_device_stream()": triton_launch.current_device_stream,
        "  is_current_stream_capturing()": torch.cuda.is_current_stream_capturing,
        "  bound launch, out given": lambda: f.launcher(
            q, k, v, kc, vc, out, pl.block_tables, pl.key_lens, pl.slot_mapping, f.scale, fixed=f.fixed, checked=True
        ),
        "  bound launch, allocating": lambda: f.launcher(
            q, k, v, kc, vc, None, pl.block_tables, pl.key_lens, pl.slot_mapping, f.scale, fixed=f.fixed,
            checked=True,
        ),
    }  # fmt: skip
    for fn in parts.values():
        fn()
    bound = f.launcher._cache._bound  # the probe looks inside: is the layer's launch raw?
    print("bound launches raw:", [b._raw is not None for b in bound.values()])
    print(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}")
    for name, fn in parts.items():
        print(f"| {name} | {mean_us(fn):.2f} |", flush=True)


if __name__ == "__main__":
    main()
