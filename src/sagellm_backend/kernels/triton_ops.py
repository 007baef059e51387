"""Fused Triton kernels for CUDA: ``rmsnorm``, ``add_rmsnorm``, ``silu_mul`` and ``rotary_embedding`` (its
kernel in :mod:`.rope_triton`).

Same semantics as :mod:`.torch_ops` (``out=`` and ``inplace=`` included), including its roundings: the normalised
value is rounded to the input dtype before the weight multiplies it (Hugging Face's order), the residual sum is
rounded before it is normalised, and ``silu(gate)`` is rounded to the gate's dtype before it multiplies ``up`` (as
the eager ``F.silu(g) * u`` does). Everything else is computed in fp32 in registers.

Layout: rows are the flattened leading dimensions. The norms give each program ``ROWS`` whole rows (one pass when
a row fits in ``BLOCK`` columns, else a loop over ``BLOCK``-column chunks that reads the row twice); ``silu_mul``
gives each program one ``BLOCK``-column chunk of one row. Inputs whose last dimension is strided are made
contiguous first; other strides are passed through.

Inputs these kernels do not handle go to the torch implementation instead of failing: tensors not on CUDA (CPU
tensors are accepted when ``TRITON_INTERPRET=1`` was set before this module was imported), dtypes other than
fp16/bf16/fp32, mixed input dtypes, shapes that need broadcasting, empty tensors. Importing this module (on first
use, by :mod:`.engine` or :func:`.base.backend_function`) imports torch and Triton.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import torch

from . import torch_ops, triton_launch
from .base import check_inplace_flag, split_gate_up
from .engine_tiles import rmsnorm_kernel as _rmsnorm_kernel
from .engine_tiles import silu_mul_kernel as _silu_mul_kernel
from .overlap import apart, extent_bytes
from .rope import RopeShape, check_positions_in_range
from .rope_triton import launch_rotary, rope_strides
from .torch_outputs import check_inplace, check_out
from .triton_launch import BoundCache, BoundLaunch, cdiv, next_power_of_2

__all__ = [
    "INTERPRET",
    "add_rmsnorm",
    "norm_config",
    "out_dtype",
    "rmsnorm",
    "rotary_embedding",
    "silu_mul",
    "silu_mul_config",
]

#: True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1`` at import).
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
_FLOATS = (torch.float16, torch.bfloat16, torch.float32)
#: Widest row (in elements) a norm program keeps in registers in one pass.
MAX_ONE_PASS = 8192
#: Column chunk of the two-pass loop for wider rows.
LOOP_BLOCK = 4096


# Bound launches per shape (the launch arguments that are not tensors, and the device, are the key).
_NORMS = BoundCache(_rmsnorm_kernel)
_SILU_MUL = BoundCache(_silu_mul_kernel)

# Launch parameters chosen by shape; tests and benchmarks may replace an entry to compare.
_OVERRIDE: dict[str, tuple[int, int, int]] = {}


@functools.lru_cache(maxsize=4096)
def _norm_config(n_rows: int, n_cols: int) -> tuple[int, int, int]:
    block = next_power_of_2(n_cols)
    if block > MAX_ONE_PASS:
        return LOOP_BLOCK, 1, 8
    rows = max(1, min(16, 2048 // block))
    while rows > 1 and cdiv(n_rows, rows) < 264:  # keep the GPU's SMs busy before packing rows
        rows //= 2
    elems = block * rows
    return block, rows, 4 if elems < 2048 else 8 if elems < 8192 else 16


def norm_config(n_rows: int, n_cols: int) -> tuple[int, int, int]:
    """``(BLOCK, ROWS, num_warps)`` of a norm launch.

    Args:
        n_rows: Rows.
        n_cols: Row length.

    Returns:
        Columns per chunk (a power of two), rows per program, warps per program.
    """
    if _OVERRIDE:
        cfg = _OVERRIDE.get("norm")
        if cfg is not None:
            return cfg
    return _norm_config(n_rows, n_cols) if n_cols <= MAX_ONE_PASS else (LOOP_BLOCK, 1, 8)


def silu_mul_config(n_rows: int, n_cols: int) -> tuple[int, int, int]:
    """``(BLOCK, 1, num_warps)`` of a ``silu_mul`` launch.

    Args:
        n_rows: Rows.
        n_cols: Output columns.

    Returns:
        Columns per program, 1, warps per program.
    """
    if _OVERRIDE:
        cfg = _OVERRIDE.get("silu_mul")
        if cfg is not None:
            return cfg
    block = min(1024, next_power_of_2(n_cols))
    return block, 1, max(1, min(4, block // 256))


def _tensor_ok(x: Any) -> bool:
    """``x`` is a non-empty float tensor on a device these kernels run on."""
    return (
        isinstance(x, torch.Tensor)
        and (x.is_cuda or (INTERPRET and x.device.type == "cpu"))
        and x.dtype in _FLOATS
        and x.dim() > 0
        and x.numel() > 0
    )


def _same(a: Any, x: torch.Tensor) -> bool:
    """``a`` is a tensor of ``x``'s dtype, shape and device."""
    return (
        isinstance(a, torch.Tensor) and a.dtype is x.dtype and a.shape == x.shape and a.get_device() == x.get_device()
    )


def _kernel_ok(x: Any, w: Any) -> bool:
    """``x`` passes :func:`_tensor_ok` and ``w`` is a matching 1-D float weight on its device."""
    return (
        _tensor_ok(x)
        and isinstance(w, torch.Tensor)
        and w.dim() == 1
        and w.shape[0] == x.shape[-1]
        and w.dtype in _FLOATS
        and w.get_device() == x.get_device()
        and w.is_cuda == x.is_cuda
    )


def _rows(t: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``(t2, row_stride)``: ``t`` itself when contiguous, else a ``[rows, cols]`` unit-column-stride view or copy."""
    if t.is_contiguous():
        return t, t.shape[-1]
    if t.stride(-1) != 1:
        t = t.contiguous()
        return t, t.shape[-1]
    t2 = t.reshape(-1, t.shape[-1])
    return t2, t2.stride(0)


def _rows_view(t: torch.Tensor) -> tuple[torch.Tensor, int] | None:
    """``(t2, row_stride)``: ``t`` as a ``[rows, cols]`` unit-column-stride view, or None when that needs a copy."""
    if t.is_contiguous():
        return t, t.shape[-1]
    if t.stride(-1) != 1:
        return None
    try:
        t2 = t.view(-1, t.shape[-1])
    except RuntimeError:  # leading dimensions that do not merge without a copy
        return None
    return t2, t2.stride(0)


def _launch_norm(
    x: torch.Tensor, r: torch.Tensor | None, w: torch.Tensor, eps: float,
    into: tuple[tuple[torch.Tensor, int], tuple[torch.Tensor, int] | None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, BoundLaunch | None]:  # fmt: skip
    """One norm launch; ``into`` gives the result (and sum) buffers as ``(rows view, row stride)`` pairs, else new
    contiguous tensors are made. Returns the buffers written (``into``'s views when given) and, when no input was
    copied first, the binding that launched (else None)."""
    n_cols = x.shape[-1]
    n_rows = x.numel() // n_cols
    x2, sx = _rows(x)
    r2, sr = _rows(r) if r is not None else (x2, sx)
    direct = w.stride(0) == 1 and x2.data_ptr() == x.data_ptr() and (r is None or r2.data_ptr() == r.data_ptr())
    if w.stride(0) != 1:
        w = w.contiguous()
    if into is None:
        y = torch.empty_like(x, dtype=out_dtype(w, x), memory_format=torch.contiguous_format)
        s = torch.empty_like(x, memory_format=torch.contiguous_format) if r is not None else y
        sy = ss = n_cols
    else:
        (y, sy), (s, ss) = into[0], into[1] if into[1] is not None else into[0]
    cfg = norm_config(n_rows, n_cols)
    block, rows, warps = cfg
    has_res = r is not None
    eps = float(eps)
    bound = _NORMS(
        (x.get_device(), n_rows, n_cols, sx, sr, sy, ss, eps, has_res, cfg),
        (cdiv(n_rows, rows),),
        (x2, r2, w, y, s, n_rows, n_cols, sx, sr, sy, ss, eps),
        {"HAS_RES": has_res, "ONE_PASS": block >= n_cols, "ROWS": rows, "BLOCK": block, "num_warps": warps},
        (x2, r2, w, y, s),
    )
    return y, (s if r is not None else None), (bound if direct else None)


def _sig(eps: object, *parts: Any) -> tuple[Any, ...] | None:
    """The fast-path key of a call (:func:`.triton_launch.call_signature` of ``eps`` and ``parts``); None under a
    launch override or for an ``eps`` that is not a float (a tensor's value is no part of a key)."""
    if _OVERRIDE or type(eps) is not float:
        return None
    return triton_launch.call_signature(eps, *parts)


def _remember(key: tuple[Any, ...] | None, bound: BoundLaunch | None, *facts: torch.Tensor | int) -> None:
    """Keep ``bound`` for ``key`` with the byte extents of the tensors among ``facts`` (the per-call overlap checks
    need them) and the ints as they are."""
    if key is not None and bound is not None:
        if len(_FAST) >= 256:
            _FAST.clear()
        _FAST[key] = (bound, tuple(f if isinstance(f, int) else extent_bytes(f) for f in facts))


#: Calls that passed every check and launched through a binding without copying an input, by :func:`_sig`: the
#: binding, and the byte extents the later calls' overlap checks need. A later call with the same key checks only
#: what depends on its tensors' data pointers (16-byte alignment, overlaps) before launching.
_FAST: dict[tuple[Any, ...], tuple[BoundLaunch, tuple[int, ...]]] = {}


def rmsnorm(x: torch.Tensor, w: torch.Tensor, eps: float = 1e-6, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """Fused RMS norm (Hugging Face ``LlamaRMSNorm`` semantics, see :func:`.torch_ops.rmsnorm`).

    Args:
        x: Input ``[..., H]``.
        w: Weight ``[H]``.
        eps: Added to the mean square.
        out: Optional result buffer (:func:`.torch_outputs.check_out`).

    Returns:
        A new tensor in the promoted dtype of ``w`` and ``x``, or ``out``.
    """
    key = _sig(eps, "rmsnorm", x, w, out)
    fast = _FAST.get(key) if key is not None else None
    if fast is not None:
        px, pw = x.data_ptr(), w.data_ptr()
        ex, ew, ey = fast[1]
        po = 0 if out is None else out.data_ptr()
        if not (px | pw) % 16 and (out is None or (apart(po, ey, px, ex) and apart(po, ey, pw, ew))):
            y = out
            if y is None:
                y = torch.empty_like(x, dtype=out_dtype(w, x), memory_format=torch.contiguous_format)
            py = y.data_ptr()
            if not py % 16:
                fast[0]((x, x, w, y, y), [px, px, pw, py, py])
                return y
    if not _kernel_ok(x, w):
        return torch_ops.rmsnorm(x, w, eps, out=out)
    if out is not None:
        check_out("rmsnorm", out, x.shape, out_dtype(w, x), x.device, (x, w))
    y, _, bound = _launch_norm(x, None, w, eps, None if out is None else ((out, x.shape[-1]), None))
    _remember(key, bound, x, w, y)
    return y


def out_dtype(w: torch.Tensor, x: torch.Tensor) -> torch.dtype:
    """The dtype a norm of ``x`` with weight ``w`` returns (the promoted one)."""
    return torch.promote_types(w.dtype, x.dtype)


def add_rmsnorm(
    x: torch.Tensor, residual: torch.Tensor, w: torch.Tensor, eps: float = 1e-6, *, inplace: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused residual add + RMS norm (:func:`.torch_ops.add_rmsnorm`'s semantics and ``inplace``).

    Args:
        x: Input ``[..., H]``.
        residual: Residual, same shape and dtype.
        w: Weight ``[H]``.
        eps: Added to the mean square.
        inplace: Write the norm into ``x`` and the sum into ``residual`` (vLLM's ``fused_add_rms_norm``).

    Returns:
        ``(rmsnorm(x + residual), x + residual)``: new tensors, or ``(x, residual)`` in place.
    """
    key = _sig(eps, "add_rmsnorm", x, residual, w, inplace)
    fast = _FAST.get(key) if key is not None else None
    if fast is not None:
        px, pr, pw = x.data_ptr(), residual.data_ptr(), w.data_ptr()
        ex, er, ew = fast[1]
        if inplace:
            if not (px | pr | pw) % 16 and apart(px, ex, pr, er) and apart(pw, ew, px, ex) and apart(pw, ew, pr, er):
                fast[0]((x, residual, w, x, residual), [px, pr, pw, px, pr])
                return x, residual
        elif not (px | pr | pw) % 16:
            y = torch.empty_like(x, dtype=out_dtype(w, x), memory_format=torch.contiguous_format)
            s = torch.empty_like(x, memory_format=torch.contiguous_format)
            py, ps = y.data_ptr(), s.data_ptr()
            if not (py | ps) % 16:
                fast[0]((x, residual, w, y, s), [px, pr, pw, py, ps])
                return y, s
    ok = _kernel_ok(x, w) and _same(residual, x) and residual.is_cuda == x.is_cuda
    if inplace is False:
        if not ok:
            return torch_ops.add_rmsnorm(x, residual, w, eps)
        y, s2, bound = _launch_norm(x, residual, w, eps)
        assert s2 is not None
        _remember(key, bound, x, residual, w)
        return y, s2
    check_inplace_flag(inplace)
    check_inplace(x, residual, w)
    xv, rv = (_rows_view(x), _rows_view(residual)) if ok else (None, None)
    if xv is None or rv is None:  # torch, or rows that are no view: compute, then write back
        return torch_ops.add_rmsnorm(x, residual, w, eps, inplace=True)
    _remember(key, _launch_norm(xv[0], rv[0], w, eps, (xv, rv))[2], x, residual, w)
    return x, residual


def silu_mul(x: torch.Tensor, up: torch.Tensor | None = None, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """Fused ``silu(gate) * up``: ``silu_mul(gate, up)`` or ``silu_mul(x)`` with ``x = [gate | up]``.

    Args:
        x: The gate, or ``[..., 2 * d]`` when ``up`` is ``None``.
        up: The up projection, same shape and dtype as the gate.
        out: Optional result buffer (:func:`.torch_outputs.check_out`).

    Returns:
        A new ``[..., d]`` tensor, or ``out``.
    """
    key = _sig(0.0, "silu_mul", x, up, out)
    fast = _FAST.get(key) if key is not None else None
    if fast is not None:
        u = x if up is None else up
        px, pu = x.data_ptr(), u.data_ptr()
        ex, eu, ey, shape = fast[1]
        po = 0 if out is None else out.data_ptr()
        if not (px | pu) % 16 and (out is None or (apart(po, ey, px, ex) and apart(po, ey, pu, eu))):
            y = x.new_empty((*x.shape[:-1], shape)) if out is None else out
            py = y.data_ptr()
            if not py % 16:
                fast[0]((x, u, y), [px, pu, py])
                return y
    if not (_tensor_ok(x) and (up is None or (_same(up, x) and up.is_cuda == x.is_cuda))):
        return torch_ops.silu_mul(x, up, out=out)
    if up is None:
        if x.shape[-1] % 2:
            split_gate_up(x, None)  # raises the odd-size error
        n_cols = x.shape[-1] // 2
        g2, sg = _rows(x)
        u2, su, u_off = g2, sg, n_cols
        out_shape = torch.Size((*x.shape[:-1], n_cols))
    else:
        n_cols = x.shape[-1]
        g2, sg = _rows(x)
        u2, su = _rows(up)
        u_off = 0
        out_shape = x.shape
    n_rows = x.numel() // x.shape[-1]
    if out is None:
        y = x.new_empty(out_shape)
    else:
        y = check_out("silu_mul", out, out_shape, x.dtype, x.device, (x,) if up is None else (x, up))
    block, _, warps = silu_mul_config(n_rows, n_cols)
    grid = (n_rows, cdiv(n_cols, block))
    bound = _SILU_MUL(
        (x.get_device(), n_cols, sg, su, u_off, block, warps),
        grid,
        (g2, u2, y, n_cols, sg, su, n_cols, u_off),
        {"BLOCK": block, "num_warps": warps},
        (g2, u2, y),
    )
    if g2.data_ptr() == x.data_ptr() and (up is None or u2.data_ptr() == up.data_ptr()):
        _remember(key, bound, x, x if up is None else up, y, n_cols)  # n_cols: the result's last dimension
    return y


def _rope_takes(t: torch.Tensor) -> bool:
    return (t.is_cuda or (INTERPRET and t.device.type == "cpu")) and (t.dim() == 1 or t.stride(-1) == 1)


def rotary_embedding(
    positions: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor | None,
    head_size: int,
    cos_sin_cache: torch.Tensor,
    is_neox: bool = True,
) -> None:
    """Rotary position embedding in place on ``query`` and ``key``: :func:`.torch_ops.rotary_embedding`'s
    arguments, checks and result, in one launch (tensors whose last dimension is strided go to torch).

    Args:
        positions: Integer ``[T]``.
        query: ``[T, Hq * head_size]`` or ``[T, Hq, head_size]``; rotated in place.
        key: ``[T, Hkv * head_size]`` or ``[T, Hkv, head_size]``, or ``None``; rotated in place.
        head_size: Dims per head.
        cos_sin_cache: ``[max_position, rot_dim]``.
        is_neox: ``True`` for NeoX/Llama halves, ``False`` for GPT-J interleaved pairs.

    Raises:
        InvalidArgumentTypeError, InvalidArgumentError, UnsupportedDTypeError, InvalidDeviceError: see
            :func:`.torch_ops.check_rotary_call`; nothing is written then.
    """
    sig = _rope_fast_key(positions, query, key, head_size, cos_sin_cache, is_neox)
    ready = _ROPE_READY.get(sig) if sig is not None else None
    if sig is not None and ready is not None:  # a call like this one passed every check and took the Triton path
        shape, strides = ready
        if sig[1] < 0:  # host positions: their values are checked at every call
            check_positions_in_range(positions.numpy(), shape.max_position)
        launch_rotary(positions, query, key, shape, cos_sin_cache, is_neox, strides)
        return
    shape = torch_ops.check_rotary_call(positions, query, key, head_size, cos_sin_cache, is_neox)
    tensors = [query] if key is None else [query, key]
    if not all(_rope_takes(t) for t in (positions, cos_sin_cache, *tensors)) or not positions.is_contiguous():
        torch_ops.rotate_in_place(positions, tensors, head_size, cos_sin_cache, is_neox)
        return
    q3 = torch_ops.heads_view(query, head_size)
    k3 = None if key is None else torch_ops.heads_view(key, head_size)
    strides = rope_strides(q3, k3, cos_sin_cache)
    launch_rotary(positions, q3, k3, shape, cos_sin_cache, is_neox, strides)
    if sig is not None:
        if len(_ROPE_READY) >= 256:
            _ROPE_READY.clear()
        _ROPE_READY[sig] = (shape, strides)


#: Calls (by :func:`_rope_fast_key`) that passed every check and launched, with their geometry and strides.
_ROPE_READY: dict[tuple[Any, ...], tuple[RopeShape, tuple[int, int, int, int, int]]] = {}


def _rope_fast_key(
    positions: Any, query: Any, key: Any, head_size: Any, cos_sin_cache: Any, is_neox: Any
) -> tuple[Any, ...] | None:
    """Everything the checks, the path choice and the launch depend on but the tensors' data (``[1]`` is the
    positions' device index); None for arguments of other types."""
    t = torch.Tensor
    if (
        type(positions) is not t or type(query) is not t or type(cos_sin_cache) is not t
        or (key is not None and type(key) is not t) or type(head_size) is not int or type(is_neox) is not bool
    ):  # fmt: skip
        return None
    k = () if key is None else (key.shape, key.stride(), key.dtype, key.get_device())
    return (
        head_size, positions.get_device(), is_neox, positions.shape, positions.stride(), positions.dtype,
        query.shape, query.stride(), query.dtype, query.get_device(), cos_sin_cache.shape, cos_sin_cache.stride(),
        cos_sin_cache.dtype, cos_sin_cache.get_device(), *k,
    )  # fmt: skip
