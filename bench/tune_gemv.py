"""Small-batch linear layers on one GPU: cuBLAS (``F.linear``) against a Triton GEMV sweep, in GB/s of weights.

    PYTHONPATH=src python3 bench/tune_gemv.py [--batches 1 8] [--quick]

The decode step's weight GEMMs at batch 1 and 8 read each weight once: their floor is the weight bytes over the
device copy rate (bytes read + written), measured in the same run. Each row times one layer shape (Llama-3-8B's
qkv, o, gate_up, down) replayed 20 times from a CUDA graph; the Triton kernel computes ``x @ W.T`` with the rows
of ``x`` padded to 16 for the tensor cores, ``BLOCK_N`` outputs per program over the whole ``K``. A second table
times the RMS norm fused into that GEMV (each program normalises the rows itself) against the norm kernel then
cuBLAS, for the weights a norm feeds (qkv, gate_up), and a third ``silu_mul`` fused into the down projection's GEMV
against the ``silu_mul`` kernel then cuBLAS. An experiment: nothing in the package uses these kernels.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from typing import Any

import torch
import torch.nn.functional as F
import triton
import triton.language as tl


@triton.jit
def _gemv_kernel(  # type: ignore[no-untyped-def]  # a Triton JIT kernel
    x_ptr, g_ptr, w_ptr, y_ptr, M, N, K, sx, sw, sy, eps, MP: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
    STAGES: tl.constexpr, NORM: tl.constexpr, SILU: tl.constexpr = False,
):  # fmt: skip
    """``x @ W.T``; with ``NORM``, ``rmsnorm(x, g) @ W.T``: every program normalises the (few) rows itself; with
    ``SILU``, ``silu_mul(x) @ W.T`` for ``x = [gate | up]`` of ``2 K`` columns (the MLP's down projection)."""
    n0 = tl.program_id(0) * BN
    rows = tl.arange(0, MP)
    cols = n0 + tl.arange(0, BN)
    ks = tl.arange(0, BK)
    rmask = rows[:, None] < M
    if NORM:
        ss = tl.zeros([MP], dtype=tl.float32)
        for k0 in range(0, K, BK):
            kk = k0 + ks
            x = tl.load(x_ptr + rows[:, None] * sx + kk[None, :], mask=rmask & (kk[None, :] < K), other=0.0)
            ss += tl.sum(x.to(tl.float32) * x.to(tl.float32), 1)
        rstd = tl.rsqrt(ss / K + eps)
    acc = tl.zeros([MP, BN], dtype=tl.float32)
    for k0 in tl.range(0, K, BK, num_stages=STAGES):
        kk = k0 + ks
        x = tl.load(x_ptr + rows[:, None] * sx + kk[None, :], mask=rmask & (kk[None, :] < K), other=0.0)
        if NORM:
            g = tl.load(g_ptr + kk, mask=kk < K, other=0.0).to(tl.float32)
            h = (x.to(tl.float32) * rstd[:, None]).to(x_ptr.dtype.element_ty).to(tl.float32) * g[None, :]
            x = h.to(w_ptr.dtype.element_ty)
        if SILU:
            up = tl.load(x_ptr + rows[:, None] * sx + K + kk[None, :], mask=rmask & (kk[None, :] < K), other=0.0)
            gf = x.to(tl.float32)
            x = (gf / (1.0 + tl.exp(-gf)) * up.to(tl.float32)).to(w_ptr.dtype.element_ty)
        w = tl.load(w_ptr + cols[:, None].to(tl.int64) * sw + kk[None, :], mask=(cols[:, None] < N) & (kk[None, :] < K),
                    other=0.0)  # fmt: skip
        acc = tl.dot(x, tl.trans(w), acc)
    tl.store(
        y_ptr + rows[:, None] * sy + cols[None, :], acc.to(y_ptr.dtype.element_ty), mask=rmask & (cols[None, :] < N)
    )


def _launch(
    x: torch.Tensor, g: torch.Tensor | None, w: torch.Tensor, eps: float, cfg: tuple[int, int, int, int],
    silu: bool = False,
) -> torch.Tensor:  # fmt: skip
    bn, bk, stages, warps = cfg
    m = x.shape[0]
    n, k = w.shape
    y = torch.empty(m, n, dtype=x.dtype, device=x.device)
    _gemv_kernel[(triton.cdiv(n, bn),)](
        x, x if g is None else g, w, y, m, n, k, x.stride(0), w.stride(0), y.stride(0), eps, MP=16, BN=bn, BK=bk,
        STAGES=stages, NORM=g is not None, SILU=silu, num_warps=warps,
    )  # fmt: skip
    return y


def silu_gemv(gu: torch.Tensor, w: torch.Tensor, cfg: tuple[int, int, int, int]) -> torch.Tensor:
    """``silu_mul(gu) @ w.T`` in one launch for ``gu [M <= 16, 2 K]`` (gate then up) and ``w [N, K]``."""
    return _launch(gu, None, w, 0.0, cfg, silu=True)


def norm_gemv(
    x: torch.Tensor, g: torch.Tensor, w: torch.Tensor, eps: float, cfg: tuple[int, int, int, int]
) -> torch.Tensor:
    """``rmsnorm(x, g, eps) @ w.T`` in one launch for ``x [M <= 16, K]``."""
    return _launch(x, g, w, eps, cfg)


def gemv(x: torch.Tensor, w: torch.Tensor, bn: int, bk: int, stages: int, warps: int) -> torch.Tensor:
    """``x @ w.T`` for ``x [M <= 16, K]``."""
    return _launch(x, None, w, 0.0, (bn, bk, stages, warps))


def graph_of(fn: Any, reps: int) -> torch.cuda.CUDAGraph:
    """A graph of ``reps`` calls of ``fn()`` (after two warm calls on a side stream)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
        fn()
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(reps):
            fn()
    return g


def graph_us(fn: Any, reps: int = 20) -> float:
    """Microseconds per call of ``fn`` replayed from a CUDA graph of ``reps`` calls (best of 5 x 10 replays)."""
    g = graph_of(fn, reps)
    g.replay()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(10):
            g.replay()
        torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - t0) / (10 * reps) * 1e6)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="*", default=[1, 8])
    ap.add_argument("--quick", action="store_true", help="three configurations")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("tune_gemv.py needs a CUDA device", file=sys.stderr)
        return 2
    dev = torch.device("cuda")
    src = torch.empty(1 << 30, dtype=torch.uint8, device=dev)
    dst = torch.empty_like(src)
    copy = graph_us(lambda s=src, d=dst: d.copy_(s), 4)
    rate = 2 * src.numel() / copy / 1e3  # GB/s, read + written
    print(f"device {torch.cuda.get_device_name(dev)}, copy rate {rate:,.0f} GB/s (read + written)")
    del src, dst
    shapes = {"qkv": (6144, 4096), "o": (4096, 4096), "gate_up": (28672, 4096), "down": (4096, 14336)}
    configs = list(itertools.product([16, 32, 64], [128, 256, 512], [3, 4], [4]))
    if args.quick:
        configs = [(16, 256, 4, 4), (32, 256, 4, 4), (64, 128, 3, 4)]
    print("| weight | batch | cuBLAS us | cuBLAS % of copy rate | best Triton us | % of copy rate | config (BN, BK, "
          "stages, warps) | max abs diff |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    fused_rows: list[tuple[Any, ...]] = []
    for (name, (n, k)), m in itertools.product(shapes.items(), args.batches):
        w = torch.randn(n, k, device=dev, dtype=torch.bfloat16) / k**0.5
        x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
        nbytes = w.numel() * 2
        ref = F.linear(x, w)
        base = graph_us(lambda x=x, w=w: F.linear(x, w))
        best: tuple[float, Any, float] = (float("inf"), None, 0.0)
        for cfg in configs:
            try:
                diff = float((gemv(x, w, *cfg).float() - ref.float()).abs().max())
                us = graph_us(lambda x=x, w=w, cfg=cfg: gemv(x, w, *cfg))
            except Exception as exc:  # a configuration that does not compile is a row of the sweep
                print(f"  {name} m={m} {cfg}: {type(exc).__name__}: {str(exc)[:80]}", file=sys.stderr)
                continue
            if us < best[0]:
                best = (us, cfg, diff)
        us, cfg, diff = best
        print(f"| {name} [{n}, {k}] | {m} | {base:.1f} | {100 * nbytes / base / 1e3 / rate:.0f} % | {us:.1f} | "
              f"{100 * nbytes / us / 1e3 / rate:.0f} % | {cfg} | {diff:.2e} |")  # fmt: skip
        if name in ("qkv", "gate_up", "down") and cfg is not None:
            fused_rows.append((name, n, k, m, w, x, cfg))
    print("\n| weight | batch | rmsnorm kernel + cuBLAS us | norm fused into the Triton GEMV us | max abs diff |")
    print("|---|---|---|---|---|")
    from sagellm_backend.kernels import triton_ops

    for name, n, k, m, w, x, cfg in fused_rows:
        if name == "down":
            continue
        g = (1.0 + 0.1 * torch.randn(k, device=dev)).to(torch.bfloat16)
        ref = F.linear(triton_ops.rmsnorm(x, g, 1e-5), w)
        two = graph_us(lambda x=x, g=g, w=w: F.linear(triton_ops.rmsnorm(x, g, 1e-5), w))
        one = graph_us(lambda x=x, g=g, w=w, cfg=cfg: norm_gemv(x, g, w, 1e-5, cfg))
        diff = float((norm_gemv(x, g, w, 1e-5, cfg).float() - ref.float()).abs().max())
        print(f"| {name} [{n}, {k}] | {m} | {two:.1f} | {one:.1f} | {diff:.2e} |")
    print("\n| weight | batch | silu_mul kernel + cuBLAS us | silu_mul fused into the Triton GEMV us | max abs diff |")
    print("|---|---|---|---|---|")
    for name, n, k, m, w, _, cfg in fused_rows:
        if name != "down":
            continue
        gu = torch.randn(m, 2 * k, device=dev, dtype=torch.bfloat16)
        ref = F.linear(triton_ops.silu_mul(gu), w)
        two = graph_us(lambda gu=gu, w=w: F.linear(triton_ops.silu_mul(gu), w))
        one = graph_us(lambda gu=gu, w=w, cfg=cfg: silu_gemv(gu, w, cfg))
        diff = float((silu_gemv(gu, w, cfg).float() - ref.float()).abs().max())
        print(f"| {name} [{n}, {k}] | {m} | {two:.1f} | {one:.1f} | {diff:.2e} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
