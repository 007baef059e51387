"""Host microseconds per ``PagedAttentionWrapper.run`` on the Triton path, measured on a CPU-only machine.

The wrapper is steered onto its Triton path with CPU tensors and every Triton kernel "compiles" to a stand-in
whose launch does nothing, so what is timed is the Python of ``run`` and of the launch helpers up to the
compiled kernel's C launcher (on an H100 that launcher adds a few microseconds per launch). The real number
comes from ``sagellm-backend bench --provider cuda --only "attention host cost"`` on the GPU.

``--forward`` times ``PagedAttentionBackend.forward`` with the step's metadata reused (its decode fast path)
instead, steered onto the Triton ops the same way (``--output``: into the caller's ``output`` buffer).
``--engine`` times the Triton engine kernels of one decode
layer (``rmsnorm``, ``add_rmsnorm``, ``silu_mul``, ``rotary_embedding``) the same way, beside one plain torch call.

``--plan`` times ``PagedAttentionWrapper.plan`` with host inputs (and ``trusted=True``): the host checks and packing,
without the device copy a CUDA wrapper adds.

Usage: ``PYTHONPATH=src python bench/bench_wrapper_host_fake.py [--variants] [--fp8] [--forward] [--engine] [--plan]``;
prints one JSON line.
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
    from sagellm_backend.kernels import rope_triton, triton_ops

    for mod in (triton_ops, rope_triton):
        for name in dir(mod):
            fn = getattr(mod, name)
            if hasattr(fn, "arg_names") and hasattr(fn, "run"):  # a @triton.jit kernel
                fn.run = compiled
    triton_ops.INTERPRET = True  # CPU tensors take the Triton path
    rope_triton.INTERPRET = True
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
    ap.add_argument("--output", action="store_true", help="with --forward: into a caller's output buffer")
    ap.add_argument("--plan", action="store_true", help="time plan() with host inputs (plain and trusted) instead")
    ap.add_argument("--reps", type=int, default=20000)
    ap.add_argument("--engine", action="store_true", help="time the Triton engine kernels of a decode layer instead")
    a = ap.parse_args()
    _patch()
    if a.engine:
        print(json.dumps({"engine": _engine_rows(a.reps)}))
        return
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
        v = torch.zeros_like(k)  # distinct from the key, as an engine's QKV split gives
        out = torch.empty_like(q)
        sc: dict[str, Any] = {"k_scale": torch.ones(1), "v_scale": torch.ones(1)} if a.fp8 else {}
        if a.plan:  # int32 tensors on the host, as the GPU host-cost bench passes them; no device copy on CPU
            lens, t32 = torch.full((batch,), width * bs - 1, dtype=torch.int32), table.to(torch.int32)
            slots = t32[:, -1].to(torch.int64) * bs + bs - 1
            plan_us = _median_us(lambda: w.plan(lens, t32, slots), a.reps)
            trusted_us = _median_us(lambda: w.plan(lens, t32, slots, trusted=True), a.reps)
            rows.append({"batch": batch, "plan_us": plan_us, "trusted_us": trusted_us})
            continue
        if a.forward:
            backend = PagedAttentionBackend(bs, **opts)
            md = PagedAttentionMetadataBuilder(bs).build_decode_metadata([width * bs - 1] * batch, table)

            into = {"output": out} if a.output else {}

            def call() -> None:
                backend.forward(q, k, v, md, kv_cache=cache, **sc, **into)
        else:

            def call() -> None:
                w.run(q, k, v, cache, out=out, **sc)

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
    print(json.dumps({"variants": a.variants, "fp8": a.fp8, "forward": a.forward, "output": a.output, "plan": a.plan,
                      "rows": rows}))  # fmt: skip


def _median_us(call: Any, reps: int) -> float:
    for _ in range(5):
        call()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        call()
        times.append(time.perf_counter_ns() - t0)
    return statistics.median(times) / 1e3


def _engine_rows(reps: int) -> list[dict[str, Any]]:
    from sagellm_backend.kernels import triton_ops as ops

    rows = []
    hidden, mlp, hq, hkv, d = 4096, 14336, 32, 8, 128
    for batch in (1, 8, 64):
        x = torch.zeros(batch, hidden, dtype=torch.bfloat16)
        w = torch.ones(hidden, dtype=torch.bfloat16)
        gu = torch.zeros(batch, 2 * mlp, dtype=torch.bfloat16)
        qkv = torch.zeros(batch, (hq + 2 * hkv) * d, dtype=torch.bfloat16)
        q, k = qkv[:, : hq * d], qkv[:, hq * d : (hq + hkv) * d]
        pos = torch.zeros(batch, dtype=torch.int64)
        cos_sin = torch.zeros(4096, d, dtype=torch.float32)
        xa, ra = torch.zeros_like(x), torch.zeros_like(x)
        act = torch.empty(batch, mlp, dtype=torch.bfloat16)
        calls: dict[str, Any] = {
            "torch.add": lambda: torch.add(x, x),
            "rmsnorm": lambda: ops.rmsnorm(x, w, 1e-5),
            "add_rmsnorm": lambda: ops.add_rmsnorm(x, x, w, 1e-5),
            "add_rmsnorm inplace": lambda: ops.add_rmsnorm(xa, ra, w, 1e-5, inplace=True),
            "silu_mul": lambda: ops.silu_mul(gu),
            "silu_mul out": lambda: ops.silu_mul(gu, out=act),
            "rotary_embedding": lambda: ops.rotary_embedding(pos, q, k, d, cos_sin, True),
        }
        rows.append({"batch": batch, **{name: round(_median_us(c, reps), 2) for name, c in calls.items()}})
    return rows


if __name__ == "__main__":
    main()
