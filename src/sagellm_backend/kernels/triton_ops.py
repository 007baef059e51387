"""Fused Triton kernels for CUDA: ``rmsnorm``, ``add_rmsnorm`` and ``silu_mul``.

Same semantics as :mod:`.torch_ops`, including its roundings: the normalised value is rounded to
the input dtype before the weight multiplies it (Hugging Face's order), the residual sum is
rounded before it is normalised, and ``silu(gate)`` is rounded to the gate's dtype before it
multiplies ``up`` (as the eager ``F.silu(g) * u`` does). Everything else is computed in fp32 in
registers, each input is read once and each output written once.

Layout: rows are the flattened leading dimensions. The norms give each program ``ROWS`` whole rows
(one pass when a row fits in ``BLOCK`` columns, else a loop over ``BLOCK``-column chunks that reads
the row twice); ``silu_mul`` gives each program one ``BLOCK``-column chunk of one row. Inputs whose
last dimension is strided are made contiguous first; other strides are passed through.

Inputs these kernels do not handle go to the torch implementation instead of failing: tensors
not on CUDA (CPU tensors are accepted when ``TRITON_INTERPRET=1`` was set before this module was
imported), dtypes other than fp16/bf16/fp32, mixed input dtypes, shapes that need broadcasting,
empty tensors.

Imported only on first use (by :mod:`.engine` or :func:`.base.backend_function`): importing it
imports torch and Triton.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import triton
import triton.language as tl

from . import torch_ops
from .base import split_gate_up

__all__ = ["INTERPRET", "add_rmsnorm", "norm_config", "rmsnorm", "silu_mul", "silu_mul_config"]

#: True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1`` at import).
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
_FLOATS = (torch.float16, torch.bfloat16, torch.float32)
#: Widest row (in elements) a norm program keeps in registers in one pass.
MAX_ONE_PASS = 8192
#: Column chunk of the two-pass loop for wider rows.
LOOP_BLOCK = 4096


@triton.jit
def _rmsnorm_kernel(  # type: ignore[no-untyped-def]
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
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    rmask = (rows < n_rows)[:, None]
    rows = rows.to(tl.int64)[:, None]
    cols = tl.arange(0, BLOCK)[None, :]
    in_ty = x_ptr.dtype.element_ty
    if ONE_PASS:
        m = rmask & (cols < n_cols)
        x = tl.load(x_ptr + rows * sx + cols, mask=m, other=0.0).to(tl.float32)
        if HAS_RES:
            r = tl.load(r_ptr + rows * sr + cols, mask=m, other=0.0).to(tl.float32)
            s = (x + r).to(in_ty)
            tl.store(s_ptr + rows * ss + cols, s, mask=m)
            x = s.to(tl.float32)
        rstd = tl.rsqrt(tl.sum(x * x, axis=1) / n_cols + eps)
        h = (x * rstd[:, None]).to(in_ty).to(tl.float32)
        w = tl.load(w_ptr + cols, mask=cols < n_cols, other=0.0).to(tl.float32)
        tl.store(y_ptr + rows * sy + cols, (w * h).to(y_ptr.dtype.element_ty), mask=m)
    else:
        acc = tl.zeros([ROWS, BLOCK], dtype=tl.float32)
        for off in range(0, n_cols, BLOCK):
            c = off + cols
            m = rmask & (c < n_cols)
            x = tl.load(x_ptr + rows * sx + c, mask=m, other=0.0).to(tl.float32)
            if HAS_RES:
                r = tl.load(r_ptr + rows * sr + c, mask=m, other=0.0).to(tl.float32)
                s = (x + r).to(in_ty)
                tl.store(s_ptr + rows * ss + c, s, mask=m)
                x = s.to(tl.float32)
            acc += x * x
        rstd = tl.rsqrt(tl.sum(acc, axis=1) / n_cols + eps)[:, None]
        for off in range(0, n_cols, BLOCK):
            c = off + cols
            m = rmask & (c < n_cols)
            x = tl.load(x_ptr + rows * sx + c, mask=m, other=0.0).to(tl.float32)
            if HAS_RES:  # recompute the rounded sum rather than read back what this program stored
                r = tl.load(r_ptr + rows * sr + c, mask=m, other=0.0).to(tl.float32)
                x = (x + r).to(in_ty).to(tl.float32)
            h = (x * rstd).to(in_ty).to(tl.float32)
            w = tl.load(w_ptr + c, mask=c < n_cols, other=0.0).to(tl.float32)
            tl.store(y_ptr + rows * sy + c, (w * h).to(y_ptr.dtype.element_ty), mask=m)


@triton.jit
def _silu_mul_kernel(  # type: ignore[no-untyped-def]
    g_ptr,
    u_ptr,
    y_ptr,
    n_cols,
    sg,
    su,
    sy,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = cols < n_cols
    g = tl.load(g_ptr + row * sg + cols, mask=m, other=0.0).to(tl.float32)
    u = tl.load(u_ptr + row * su + cols, mask=m, other=0.0).to(tl.float32)
    a = (g / (1.0 + tl.exp(-g))).to(y_ptr.dtype.element_ty).to(tl.float32)
    tl.store(y_ptr + row * sy + cols, (a * u).to(y_ptr.dtype.element_ty), mask=m)


# Launch parameters chosen by shape; tests and benchmarks may replace an entry to compare.
_OVERRIDE: dict[str, tuple[int, int, int]] = {}


def norm_config(n_rows: int, n_cols: int) -> tuple[int, int, int]:
    """``(BLOCK, ROWS, num_warps)`` of a norm launch.

    Args:
        n_rows: Rows.
        n_cols: Row length.

    Returns:
        Columns per chunk (a power of two), rows per program, warps per program.
    """
    if "norm" in _OVERRIDE:
        return _OVERRIDE["norm"]
    block = triton.next_power_of_2(n_cols)
    if block > MAX_ONE_PASS:
        return LOOP_BLOCK, 1, 8
    rows = max(1, min(16, 2048 // block))
    while rows > 1 and triton.cdiv(n_rows, rows) < 264:  # keep the GPU's SMs busy before packing rows
        rows //= 2
    warps = max(1, min(16, block * rows // 256))
    return block, rows, warps


def silu_mul_config(n_rows: int, n_cols: int) -> tuple[int, int, int]:
    """``(BLOCK, 1, num_warps)`` of a ``silu_mul`` launch.

    Args:
        n_rows: Rows.
        n_cols: Output columns.

    Returns:
        Columns per program, 1, warps per program.
    """
    if "silu_mul" in _OVERRIDE:
        return _OVERRIDE["silu_mul"]
    block = min(1024, triton.next_power_of_2(n_cols))
    return block, 1, max(1, min(4, block // 256))


def _usable(*ts: torch.Tensor) -> bool:
    """All of ``ts`` are non-empty tensors of one float dtype on one device the kernels can run on."""
    if not all(isinstance(t, torch.Tensor) for t in ts):
        return False
    first = ts[0]
    dev = first.device
    if dev.type != "cuda" and not (INTERPRET and dev.type == "cpu"):
        return False
    return (
        first.dtype in _FLOATS
        and first.dim() > 0
        and first.numel() > 0
        and all(t.dtype == first.dtype and t.device == dev for t in ts)
    )


def _rows(t: torch.Tensor) -> torch.Tensor:
    """``t`` as ``[rows, cols]`` with unit column stride (a view when possible)."""
    if t.stride(-1) != 1:
        t = t.contiguous()
    return t.reshape(-1, t.shape[-1])


def _weight_ok(w: Any, x: torch.Tensor) -> bool:
    return (
        isinstance(w, torch.Tensor)
        and w.dim() == 1
        and w.shape[0] == x.shape[-1]
        and w.dtype in _FLOATS
        and w.device == x.device
    )


def _launch_norm(
    x: torch.Tensor, r: torch.Tensor | None, w: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor | None]:
    x2 = _rows(x)
    n_rows, n_cols = x2.shape
    w = w if w.stride(0) == 1 else w.contiguous()
    y = torch.empty(x.shape, dtype=torch.promote_types(w.dtype, x.dtype), device=x.device)
    y2 = y.view(n_rows, n_cols)
    s = torch.empty(x.shape, dtype=x.dtype, device=x.device) if r is not None else None
    r2 = _rows(r) if r is not None else x2
    s2 = s.view(n_rows, n_cols) if s is not None else y2
    block, rows, warps = norm_config(n_rows, n_cols)
    grid = (triton.cdiv(n_rows, rows),)
    _rmsnorm_kernel[grid](
        x2,
        r2,
        w,
        y2,
        s2,
        n_rows,
        n_cols,
        x2.stride(0),
        r2.stride(0),
        y2.stride(0),
        s2.stride(0),
        float(eps),
        HAS_RES=r is not None,
        ONE_PASS=block >= n_cols,
        ROWS=rows,
        BLOCK=block,
        num_warps=warps,
    )
    return y, s


def rmsnorm(x: torch.Tensor, w: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Fused RMS norm (Hugging Face ``LlamaRMSNorm`` semantics, see :func:`.torch_ops.rmsnorm`).

    Args:
        x: Input ``[..., H]``.
        w: Weight ``[H]``.
        eps: Added to the mean square.

    Returns:
        A new tensor in the promoted dtype of ``w`` and ``x``.
    """
    if not (_usable(x) and _weight_ok(w, x)):
        return torch_ops.rmsnorm(x, w, eps)
    return _launch_norm(x, None, w, eps)[0]


def add_rmsnorm(
    x: torch.Tensor, residual: torch.Tensor, w: torch.Tensor, eps: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused residual add + RMS norm; returns new tensors, the inputs are not modified.

    Args:
        x: Input ``[..., H]``.
        residual: Residual, same shape and dtype.
        w: Weight ``[H]``.
        eps: Added to the mean square.

    Returns:
        ``(rmsnorm(x + residual), x + residual)``.
    """
    if not (_usable(x, residual) and x.shape == residual.shape and _weight_ok(w, x)):
        return torch_ops.add_rmsnorm(x, residual, w, eps)
    y, s = _launch_norm(x, residual, w, eps)
    assert s is not None
    return y, s


def silu_mul(x: torch.Tensor, up: torch.Tensor | None = None) -> torch.Tensor:
    """Fused ``silu(gate) * up``: ``silu_mul(gate, up)`` or ``silu_mul(x)`` with ``x = [gate | up]``.

    Args:
        x: The gate, or ``[..., 2 * d]`` when ``up`` is ``None``.
        up: The up projection, same shape and dtype as the gate.

    Returns:
        A new ``[..., d]`` tensor.
    """
    gate, u = split_gate_up(x, up)
    if not (_usable(gate, u) and gate.shape == u.shape):
        return torch_ops.silu_mul(x, up)
    g2, u2 = _rows(gate), _rows(u)
    n_rows, n_cols = g2.shape
    y = torch.empty(gate.shape, dtype=gate.dtype, device=gate.device)
    y2 = y.view(n_rows, n_cols)
    block, _, warps = silu_mul_config(n_rows, n_cols)
    grid = (n_rows, triton.cdiv(n_cols, block))
    _silu_mul_kernel[grid](g2, u2, y2, n_cols, g2.stride(0), u2.stride(0), y2.stride(0), BLOCK=block, num_warps=warps)
    return y
