"""Host microseconds per ``PagedAttentionWrapper.run`` on the Triton path, measured on a CPU-only machine.

The wrapper is steered onto its Triton path with CPU tensors and every Triton kernel "compiles" to a stand-in
whose launch does nothing, so what is timed is the Python of ``run`` and of the launch helpers up to the
compiled kernel's C launcher (on an H100 that launcher adds a few microseconds per launch). The real number
comes from ``sagellm-backend bench --provider cuda --only "attention host cost"`` on the GPU.

``--forward`` times ``PagedAttentionBackend.forward`` with the step's metadata reused (its decode fast path)
instead, steered onto the Triton ops the same way.

Usage: ``PYTHONPATH=src python bench/bench_wrapper_host_fake.py [--variants] [--fp8] [--forward]``; prints one
JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch


class _FakeCompiled:
    """What ``fn[grid](...)`` returns once compiled: ``run`` is the C launcher, here a no-op."""

    function = None
    packed_metadata = None
    launches = 0

    def run(self, *args: Any) -> None:
        _FakeCompiled.launches += 1


class _FakeDriver:
    class active:  # mirrors triton.runtime.driver.active
        @staticmethod
        def get_current_device() -> int:
            return 0

        @staticmethod
        def get_current_stream(device: int) -> int:
            return 0


def _patch() -> None:
    from sagellm_backend.attention import paged_triton as pt
    from sagellm_backend.kernels import triton_launch as tl

    fake = _FakeCompiled()

    def compiled(*args: Any, **kw: Any) -> _FakeCompiled:
        fake.run()
        return fake

    for name in ("decode_kernel", "store_kv_kernel"):
        getattr(pt, name).run = compiled
    tl.driver = _FakeDriver  # type: ignore[assignment]  # the stand-in driver of this measurement
    tl.DIRECT = True

    def part(a: Any) -> Any:  # CPU tensors specialise as CUDA ones would
        if isinstance(a, torch.Tensor):
            return (a.dtype, 0, a.data_ptr() % 16 == 0)
        return (type(a), a)

    tl._part = part


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", action="store_true", help="sliding window + soft cap + ALiBi")
    ap.add_argument("--fp8", action="store_true", help="fp8_e4m3 cache with per-tensor scales")
    ap.add_argument("--forward", action="store_true", help="time forward() with reused metadata instead")
    ap.add_argument("--reps", type=int, default=20000)
    a = ap.parse_args()
    _patch()
    from sagellm_backend.attention import (
        PagedAttentionBackend,
        PagedAttentionMetadataBuilder,
        PagedAttentionWrapper,
        paged,
    )
    from sagellm_backend.attention import paged_triton as pt
    from sagellm_backend.attention.registry import impls_of

    ops = impls_of("paged")[0].load_ops()  # the Triton row
    paged.select_paged_ops = lambda *args, **kw: (ops, "triton")  # type: ignore[assignment]  # steered, as on CUDA
    from sagellm_backend.attention.paged_workspace import DecodeWorkspace

    hq, hkv, d, bs, width = 32, 8, 128, 16, 128
    rows = []
    for batch in (1, 8, 64):
        nb = batch * width + 1
        opts: dict[str, Any] = {}
        if a.variants:
            opts = {"sliding_window": 1024, "logits_soft_cap": 30.0, "alibi_slopes": [0.1] * hq}
        if a.fp8:
            opts["kv_cache_dtype"] = "fp8_e4m3"
        w = PagedAttentionWrapper(
            hq, hkv, d, block_size=bs, max_batch=batch, max_blocks_per_seq=width, device="cpu", num_blocks=nb, **opts
        )
        cfg = pt.decode_config(d, torch.bfloat16, hq // hkv)
        w._ops[torch.bfloat16] = (pt, "triton", cfg)  # the Triton path, as on CUDA
        w._workspace = DecodeWorkspace(
            torch.empty(batch * hq * 64 * d), torch.empty(batch * hq * 64), torch.zeros(batch * hkv, dtype=torch.int32)
        )
        table = torch.randperm(nb - 1)[: batch * width].view(batch, width)
        w.plan([width * bs - 1] * batch, table, (table[:, -1] * bs + bs - 1).tolist())
        cdt = torch.float8_e4m3fn if a.fp8 else torch.bfloat16
        cache = (torch.zeros(nb, bs, hkv, d, dtype=cdt), torch.zeros(nb, bs, hkv, d, dtype=cdt))
        q = torch.zeros(batch, hq, d, dtype=torch.bfloat16)
        k = torch.zeros(batch, hkv, d, dtype=torch.bfloat16)
        out = torch.empty_like(q)
        sc: dict[str, Any] = {"k_scale": torch.ones(1), "v_scale": torch.ones(1)} if a.fp8 else {}
        if a.forward:
            backend = PagedAttentionBackend(bs, **opts)
            md = PagedAttentionMetadataBuilder(bs).build_decode_metadata([width * bs - 1] * batch, table)

            def call() -> None:
                backend.forward(q, k, k, md, kv_cache=cache, **sc)
        else:

            def call() -> None:
                w.run(q, k, k, cache, out=out, **sc)

        for _ in range(5):
            call()
        before = _FakeCompiled.launches
        times = []
        for _ in range(a.reps):
            t0 = time.perf_counter_ns()
            call()
            times.append(time.perf_counter_ns() - t0)
        launches = (_FakeCompiled.launches - before) / a.reps
        rows.append({"batch": batch, "median_us": statistics.median(times) / 1e3, "launches_per_run": launches})
    print(json.dumps({"variants": a.variants, "fp8": a.fp8, "forward": a.forward, "rows": rows}))


if __name__ == "__main__":
    main()
