"""Engine kernels in numpy, for the Mock provider (whose memory is numpy arrays).

Same names, arguments and semantics as :mod:`.torch_ops` (see there). Floating inputs must be
float16, float32 or float64: the Mock stores bf16 and fp8 as raw bits (``uint16`` / ``uint8``),
which these kernels refuse rather than misread. Reductions, transcendental functions and matrix
products run in float32 (float64 inputs in float64); results are cast back to the dtype torch
would return.

``gelu`` evaluates erf with Abramowitz & Stegun's formula 7.1.26 (absolute error below 1.5e-7, of
the order of float32 rounding), since numpy has no vectorised erf.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError, InvalidArgumentTypeError, UnsupportedDTypeError
from .base import OP_FUNCTIONS, check_inplace_flag, qkv_split_sizes, split_gate_up
from .overlap import strides_overlap
from .rope import check_positions_in_range, check_rotary

__all__ = [*OP_FUNCTIONS, "erf"]

_FLOATS = (np.float16, np.float32, np.float64)


def _f(a: Any, what: str) -> np.ndarray[Any, Any]:
    arr = np.asarray(a)
    if arr.dtype.type not in _FLOATS:
        raise UnsupportedDTypeError(
            f"numpy kernels compute with float16/float32/float64; {what} has dtype {arr.dtype}. "
            "The Mock provider stores bf16/fp8 as raw bits: convert to float32 first, or use a torch provider."
        )
    return arr


def _wide(arr: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """float32 (float64 stays float64) for computing."""
    return arr if arr.dtype == np.float64 else arr.astype(np.float32)


def linear(x: Any, w: Any, b: Any | None = None) -> np.ndarray[Any, Any]:
    """``x @ w.T + b``.

    Args:
        x: Input ``[..., in]``.
        w: Weight ``[out, in]``.
        b: Bias ``[out]`` or ``None``.

    Returns:
        ``[..., out]`` in the promoted dtype.
    """
    xa, wa = _f(x, "x"), _f(w, "w")
    out_dtype = np.result_type(xa, wa)
    y = _wide(xa) @ _wide(wa).T
    if b is not None:
        ba = _f(b, "b")
        out_dtype = np.result_type(out_dtype, ba)
        y = y + _wide(ba)
    return np.asarray(y.astype(out_dtype, copy=False))


def embedding(ids: Any, w: Any) -> np.ndarray[Any, Any]:
    """Rows of ``w`` at ``ids``.

    Args:
        ids: Integer indices, any shape.
        w: Table ``[V, H]``.

    Returns:
        ``[*ids.shape, H]``.

    Raises:
        InvalidArgumentTypeError: ``ids`` is not an integer array.
    """
    ia = np.asarray(ids)
    if ia.dtype.kind not in "iu":
        raise InvalidArgumentTypeError(f"embedding ids must be integers; got dtype {ia.dtype}.")
    return np.asarray(np.asarray(w)[ia])


def rmsnorm(x: Any, w: Any, eps: float = 1e-6, *, out: Any | None = None) -> np.ndarray[Any, Any]:
    """``w * (x / rms(x)).astype(x.dtype)``, as Hugging Face's ``LlamaRMSNorm``.

    Args:
        x: Input ``[..., H]``.
        w: Weight ``[H]``.
        eps: Added to the mean square.
        out: Optional result buffer: a writeable array of the result's shape and dtype sharing no memory with the
            inputs (as :mod:`.torch_outputs` asks of torch tensors).

    Returns:
        The promoted dtype of ``w`` and ``x`` (``out`` when given).
    """
    xa, wa = _f(x, "x"), _f(w, "w")
    h = _wide(xa)
    h = h * (1.0 / np.sqrt(np.mean(h * h, axis=-1, keepdims=True) + np.float32(eps))).astype(h.dtype)
    y = np.asarray(wa * h.astype(xa.dtype))
    return y if out is None else _into(_check_out("rmsnorm", out, y, (xa, wa)), y)


def _check_out(op: str, out: Any, y: np.ndarray[Any, Any], inputs: tuple[Any, ...]) -> np.ndarray[Any, Any]:
    """``out`` as the buffer of result ``y`` (computed, not yet written), or a typed error."""
    if not isinstance(out, np.ndarray):
        raise InvalidArgumentTypeError(f"{op}: out must be a numpy array or None; got {type(out).__name__}.")
    want = f"{op}: out must be a writeable C-contiguous array of shape {y.shape} and dtype {y.dtype}"
    if out.shape != y.shape or not out.flags.c_contiguous or not out.flags.writeable:
        flags = f"C-contiguous {out.flags.c_contiguous}, writeable {out.flags.writeable}"
        raise InvalidArgumentError(f"{want}; got shape {out.shape}, {flags}.")
    if out.dtype != y.dtype:
        raise UnsupportedDTypeError(f"{want}; got dtype {out.dtype}.")
    if any(np.may_share_memory(out, a) for a in inputs):
        raise InvalidArgumentError(f"{want}, sharing no memory with the inputs; it overlaps one. Pass another.")
    return out


def _into(out: np.ndarray[Any, Any], y: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    np.copyto(out, y)
    return out


def _pointwise(x: Any, fn: Callable[[np.ndarray[Any, Any]], np.ndarray[Any, Any]]) -> np.ndarray[Any, Any]:
    """``fn`` of ``x`` computed in float32 (float64 stays float64), rounded back to ``x``'s dtype."""
    xa = _f(x, "x")
    return fn(_wide(xa)).astype(xa.dtype)


def silu(x: Any) -> np.ndarray[Any, Any]:
    """:func:`.torch_ops.silu` (argument and result as there), with ``sigmoid(x) = (1 + tanh(x / 2)) / 2``
    (no overflow)."""
    return _pointwise(x, lambda h: h * (0.5 + 0.5 * np.tanh(0.5 * h)))


def erf(x: Any) -> np.ndarray[Any, Any]:
    """Error function, Abramowitz & Stegun 7.1.26 (absolute error < 1.5e-7).

    Args:
        x: Input (float).

    Returns:
        ``erf(x)`` in float32 (float64 for float64 input), evaluated in float64.
    """
    h = _wide(_f(x, "x"))
    a = np.abs(h.astype(np.float64))  # the polynomial in float64: the formula's error, not float32's
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return np.asarray((np.sign(h) * (1.0 - poly * np.exp(-a * a))).astype(h.dtype))


def gelu(x: Any) -> np.ndarray[Any, Any]:
    """:func:`.torch_ops.gelu` (argument and result as there): the exact form
    ``0.5 * x * (1 + erf(x / sqrt(2)))``, erf by :func:`erf`."""
    return _pointwise(x, lambda h: 0.5 * h * (1.0 + erf(h * np.float32(0.7071067811865476))))


def relu(x: Any) -> np.ndarray[Any, Any]:
    """:func:`.torch_ops.relu` (argument and result as there); NaN stays NaN."""
    xa = _f(x, "x")
    return np.asarray(np.maximum(xa, xa.dtype.type(0)))


def layernorm(x: Any, w: Any | None, b: Any | None = None, eps: float = 1e-5) -> np.ndarray[Any, Any]:
    """:func:`.torch_ops.layernorm` (arguments as there): biased variance, as ``F.layer_norm``; the result
    has ``x``'s shape and dtype."""
    xa = _f(x, "x")
    h = _wide(xa)
    mu = h.mean(axis=-1, keepdims=True)
    c = h - mu
    y = c / np.sqrt((c * c).mean(axis=-1, keepdims=True) + eps)
    if w is not None:
        y = y * _wide(_f(w, "w"))
    if b is not None:
        y = y + _wide(_f(b, "b"))
    return np.asarray(y.astype(xa.dtype))


def silu_mul(x: Any, up: Any | None = None, *, out: Any | None = None) -> np.ndarray[Any, Any]:
    """``silu(gate) * up``; one-argument form splits ``x``'s last dimension as ``[gate | up]``.

    Args:
        x: The gate, or ``[..., 2 * d]`` when ``up`` is ``None``.
        up: The up projection.
        out: Optional result buffer (as :func:`rmsnorm`'s).

    Returns:
        ``[..., d]``; silu is rounded to the gate's dtype before the product, as torch does (``out`` when given).
    """
    xa = _f(x, "x")
    ua = None if up is None else _f(up, "up")
    gate, u = split_gate_up(xa, ua)
    y = np.asarray(silu(gate) * u)
    return y if out is None else _into(_check_out("silu_mul", out, y, (xa,) if ua is None else (xa, ua)), y)


def add_rmsnorm(
    x: Any, residual: Any, w: Any, eps: float = 1e-6, *, inplace: bool = False
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """:func:`.torch_ops.add_rmsnorm` (arguments and result as there); with ``inplace=True`` ``x`` and ``residual``
    must be distinct writeable arrays of one shape and dtype, which the result keeps, sharing no memory with each other
    or the weight."""
    check_inplace_flag(inplace)
    s = _f(x, "x") + _f(residual, "residual")
    y = rmsnorm(s, w, eps)
    if not inplace:
        return y, s
    pre = "add_rmsnorm(inplace=True) writes the norm into x and the sum into residual"
    if not isinstance(x, np.ndarray) or not isinstance(residual, np.ndarray):
        got = f"{type(x).__name__}, {type(residual).__name__}"
        raise InvalidArgumentTypeError(f"{pre}, which must be numpy arrays; got {got}.")
    if x.shape != y.shape or residual.shape != y.shape or not (x.flags.writeable and residual.flags.writeable):
        raise InvalidArgumentError(f"{pre}: writeable arrays of one shape; got {x.shape} and {residual.shape}.")
    if x.dtype != y.dtype or residual.dtype != y.dtype:
        raise UnsupportedDTypeError(
            f"{pre}: x, residual and the result must share one dtype; got {x.dtype}, {residual.dtype} and {y.dtype}."
        )
    if np.may_share_memory(x, residual):
        raise InvalidArgumentError(f"{pre}: they must not share memory; they overlap. Pass separate arrays.")
    for name, a in (("x", x), ("residual", residual)):
        if strides_overlap(a.shape, tuple(st // a.itemsize for st in a.strides)):
            raise InvalidArgumentError(f"{pre}: each element needs its own memory; {name} has elements that share it.")
    if np.may_share_memory(w, x) or np.may_share_memory(w, residual):
        raise InvalidArgumentError(f"{pre}: the weight must not share memory with them; it overlaps. Pass a copy.")
    np.copyto(residual, s)
    np.copyto(x, y)
    return x, residual


def fused_qkv_projection(
    h: Any, qkv_w: Any, nh: int, nkv: int, hd: int, qkv_bias: Any | None = None
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """:func:`.torch_ops.fused_qkv_projection` (arguments and result as there): one GEMM with the
    ``[q; k; v]``-stacked weight, split into heads."""
    wa = _f(qkv_w, "qkv_w")
    q_rows, kv_rows = qkv_split_sizes(wa.shape[0], nh, nkv, hd)
    qkv = linear(h, wa, qkv_bias)
    lead = qkv.shape[:-1]
    q = qkv[..., :q_rows].reshape(*lead, nh, hd)
    k = qkv[..., q_rows : q_rows + kv_rows].reshape(*lead, nkv, hd)
    v = qkv[..., q_rows + kv_rows :].reshape(*lead, nkv, hd)
    return q, k, v


def rotary_embedding(
    positions: Any, query: Any, key: Any | None, head_size: int, cos_sin_cache: Any, is_neox: bool = True
) -> None:
    """Rotary position embedding in place on numpy ``query`` and ``key`` (semantics in :mod:`.rope`).

    Args:
        positions: Integer ``[T]``; every position is checked against the cache.
        query: ``[T, Hq * head_size]`` or ``[T, Hq, head_size]``, a writable array; rotated in place.
        key: Same layout with ``Hkv`` heads, or ``None``; rotated in place.
        head_size: Dims per head.
        cos_sin_cache: ``[max_position, rot_dim]``.
        is_neox: ``True`` for NeoX/Llama halves, ``False`` for GPT-J interleaved pairs.

    Raises:
        InvalidArgumentTypeError: A non-array argument or a read-only query/key.
        InvalidArgumentError, UnsupportedDTypeError: see :func:`.rope.check_rotary`; nothing is written then.
    """
    shape = check_rotary(
        positions, query, key, head_size, cos_sin_cache, is_neox, frozenset({"float16", "float32", "float64"})
    )
    targets = [query] if key is None else [query, key]
    for x in targets:
        if not isinstance(x, np.ndarray) or not x.flags.writeable:
            raise InvalidArgumentTypeError("rotary_embedding: query and key must be writable numpy arrays (in place).")
    pos = np.asarray(positions)
    check_positions_in_range(pos, shape.max_position)
    half, rot = shape.rot_dim // 2, shape.rot_dim
    rows = _wide(np.asarray(cos_sin_cache))[pos.astype(np.int64)]
    wide = np.float64 if query.dtype == np.float64 else np.float32
    cos, sin = rows[:, None, :half].astype(wide), rows[:, None, half:].astype(wide)
    for x in targets:
        x3 = x if x.ndim == 3 else x.reshape(x.shape[0], x.shape[1] // head_size, head_size)
        if x3.size and not np.shares_memory(x3, x):
            raise InvalidArgumentTypeError("rotary_embedding: query/key cannot be viewed as [T, H, head_size].")
        x1, x2 = (x3[..., :half], x3[..., half:rot]) if is_neox else (x3[..., 0:rot:2], x3[..., 1:rot:2])
        f1, f2 = x1.astype(wide), x2.astype(wide)
        x1[...] = (f1 * cos - f2 * sin).astype(x.dtype)
        x2[...] = (f2 * cos + f1 * sin).astype(x.dtype)
