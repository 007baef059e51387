"""The Triton JIT kernels of the fused engine kernels (:mod:`.triton_ops` launches them): the RMS norm with an
optional residual add, and ``silu(gate) * up``. Semantics, roundings and layout in :mod:`.triton_ops`. Only triton
below it.

Imported lazily (it imports triton).
"""

from __future__ import annotations

import triton
import triton.language as tl

__all__ = ["load_summed", "rmsnorm_kernel", "silu_mul_kernel"]


@triton.jit
def load_summed(x_ptr, r_ptr, s_ptr, rows, cols, m, sx, sr, ss, HAS_RES: tl.constexpr, STORE: tl.constexpr):  # type: ignore[no-untyped-def]  # a Triton JIT kernel: untyped pointers and constexprs
    """``x[rows, cols]`` in fp32; with ``HAS_RES`` the sum ``x + r``, rounded to x's dtype (and with ``STORE``
    stored to ``s``, which may be ``r`` itself: each element is read before it is written, by the same thread)."""
    x = tl.load(x_ptr + rows * sx + cols, mask=m, other=0.0).to(tl.float32)
    if HAS_RES:
        r = tl.load(r_ptr + rows * sr + cols, mask=m, other=0.0).to(tl.float32)
        s = (x + r).to(x_ptr.dtype.element_ty)
        if STORE:
            tl.store(s_ptr + rows * ss + cols, s, mask=m)
        x = s.to(tl.float32)
    return x


@triton.jit
def rmsnorm_kernel(  # type: ignore[no-untyped-def]  # a Triton JIT kernel: untyped pointers and constexprs
    x_ptr,
    r_ptr,
    w_ptr,
    y_ptr,
    s_ptr,
    n_rows,
    n_cols,
    sx,
    sr,
    sy,
    ss,
    eps,
    HAS_RES: tl.constexpr,
    ONE_PASS: tl.constexpr,
    ROWS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # y may be x and s may be r (add_rmsnorm in place): every element is loaded before it is stored, and the two
    # passes of a long row store only in the second, so no later load reads a stored value.
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    rmask = (rows < n_rows)[:, None]
    rows = rows.to(tl.int64)[:, None]
    cols = tl.arange(0, BLOCK)[None, :]
    in_ty = x_ptr.dtype.element_ty
    if ONE_PASS:
        m = rmask & (cols < n_cols)
        x = load_summed(x_ptr, r_ptr, s_ptr, rows, cols, m, sx, sr, ss, HAS_RES, True)
        rstd = tl.rsqrt(tl.sum(x * x, axis=1) / n_cols + eps)
        h = (x * rstd[:, None]).to(in_ty).to(tl.float32)
        w = tl.load(w_ptr + cols, mask=cols < n_cols, other=0.0).to(tl.float32)
        tl.store(y_ptr + rows * sy + cols, (w * h).to(y_ptr.dtype.element_ty), mask=m)
    else:
        acc = tl.zeros([ROWS, BLOCK], dtype=tl.float32)
        for off in range(0, n_cols, BLOCK):
            c = off + cols
            m = rmask & (c < n_cols)
            x = load_summed(x_ptr, r_ptr, s_ptr, rows, c, m, sx, sr, ss, HAS_RES, False)
            acc += x * x
        rstd = tl.rsqrt(tl.sum(acc, axis=1) / n_cols + eps)[:, None]
        for off in range(0, n_cols, BLOCK):
            c = off + cols
            m = rmask & (c < n_cols)
            x = load_summed(x_ptr, r_ptr, s_ptr, rows, c, m, sx, sr, ss, HAS_RES, True)
            h = (x * rstd).to(in_ty).to(tl.float32)
            w = tl.load(w_ptr + c, mask=c < n_cols, other=0.0).to(tl.float32)
            tl.store(y_ptr + rows * sy + c, (w * h).to(y_ptr.dtype.element_ty), mask=m)


@triton.jit
def silu_mul_kernel(  # type: ignore[no-untyped-def]  # a Triton JIT kernel: untyped pointers and constexprs
    g_ptr,
    u_ptr,
    y_ptr,
    n_cols,
    sg,
    su,
    sy,
    u_off,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = cols < n_cols
    g = tl.load(g_ptr + row * sg + cols, mask=m, other=0.0).to(tl.float32)
    u = tl.load(u_ptr + u_off + row * su + cols, mask=m, other=0.0).to(tl.float32)
    a = (g / (1.0 + tl.exp(-g))).to(y_ptr.dtype.element_ty).to(tl.float32)
    tl.store(y_ptr + row * sy + cols, (a * u).to(y_ptr.dtype.element_ty), mask=m)
