"""Engine kernels in plain torch: any torch device, any floating dtype torch computes with.

Semantics (shared by :mod:`.numpy_ops` and :mod:`.triton_ops`):

* ``linear(x, w, b=None)`` is ``F.linear``; ``embedding(ids, w)`` is ``F.embedding``.
* ``rmsnorm(x, w, eps)`` is Hugging Face's ``LlamaRMSNorm.forward`` op for op: ``h = x`` in fp32,
  ``h = h * rsqrt(mean(h**2, -1) + eps)``, then ``w * h.to(x.dtype)`` (so the normalised value is
  rounded to the input dtype before the weight multiplies it, and the result has the promoted
  dtype of ``w`` and ``x``).
* ``gelu`` is the exact erf form ``0.5 * x * (1 + erf(x / sqrt(2)))`` (``F.gelu`` default), not
  the tanh approximation.
* ``silu_mul`` computes ``silu(gate) * up``. Two forms: ``silu_mul(gate, up)``, and
  ``silu_mul(x)`` where the last dimension of ``x`` is ``[gate | up]`` concatenated (vLLM's
  ``SiluAndMul`` layout: gate first); the output's last dimension is half of ``x``'s.
* ``add_rmsnorm(x, residual, w, eps)`` returns ``(rmsnorm(x + residual, w, eps), x + residual)``:
  the sum is rounded to its dtype first, as in a Llama decoder layer. Inputs are not modified, but with
  ``inplace=True`` (vLLM's ``fused_add_rms_norm``): the norm is written into ``x``, the sum into ``residual``.
* ``rmsnorm`` and ``silu_mul`` take ``out=``, a caller-owned result buffer (vLLM's ``rms_norm(out, ...)`` and
  ``silu_and_mul(out, ...)``); :mod:`.torch_outputs` says what it must be.
* ``fused_qkv_projection(h, qkv_w, nh, nkv, hd, qkv_bias=None)`` runs one GEMM with the
  ``[q; k; v]``-stacked weight (``(nh + 2 * nkv) * hd`` rows) and returns ``q [..., nh, hd]``,
  ``k [..., nkv, hd]``, ``v [..., nkv, hd]``: views into the one output.
* ``rotary_embedding(positions, query, key, head_size, cos_sin_cache, is_neox=True)`` rotates ``query``
  and ``key`` in place (vLLM's op; semantics and position checks in :mod:`.rope`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from ..errors import InvalidDeviceError
from .base import OP_FUNCTIONS, check_inplace_flag, qkv_split_sizes, split_gate_up
from .rope import RopeShape, check_positions_in_range, check_rotary
from .torch_outputs import check_inplace, check_out

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [*OP_FUNCTIONS]


def linear(x: Tensor, w: Tensor, b: Tensor | None = None) -> Tensor:
    """``x @ w.T + b`` (``F.linear``).

    Args:
        x: Input ``[..., in]``.
        w: Weight ``[out, in]``.
        b: Bias ``[out]`` or ``None``.

    Returns:
        ``[..., out]``.
    """
    return F.linear(x, w, b)


def embedding(ids: Tensor, w: Tensor) -> Tensor:
    """Rows of ``w`` at ``ids`` (``F.embedding``).

    Args:
        ids: Integer indices, any shape.
        w: Table ``[V, H]``.

    Returns:
        ``[*ids.shape, H]``.
    """
    return F.embedding(ids, w)


def rmsnorm(x: Tensor, w: Tensor, eps: float = 1e-6, *, out: Tensor | None = None) -> Tensor:
    """RMS normalisation over the last dimension, as Hugging Face's ``LlamaRMSNorm``.

    Args:
        x: Input ``[..., H]``.
        w: Weight ``[H]``.
        eps: Added to the mean square.
        out: Optional result buffer (:func:`.torch_outputs.check_out`: ``x``'s shape, the promoted dtype).

    Returns:
        ``w * (x / rms(x)).to(x.dtype)``, in the promoted dtype of ``w`` and ``x`` (``out`` when given).
    """
    if out is not None:
        check_out("rmsnorm", out, x.shape, torch.promote_types(w.dtype, x.dtype), x.device, (x, w))
        return torch.mul(w, _normed(x, eps), out=out)
    return w * _normed(x, eps)


def _normed(x: Tensor, eps: float) -> Tensor:
    """``(x / rms(x)).to(x.dtype)``, computed in fp32."""
    input_dtype = x.dtype
    h = x.to(torch.float32)
    variance = h.pow(2).mean(-1, keepdim=True)
    h = h * torch.rsqrt(variance + eps)
    return h.to(input_dtype)


def silu(x: Tensor) -> Tensor:
    """``x * sigmoid(x)``, elementwise: a tensor of ``x``'s shape and dtype."""
    return F.silu(x)


def gelu(x: Tensor) -> Tensor:
    """Exact GELU, ``0.5 * x * (1 + erf(x / sqrt(2)))`` (not the tanh approximation), elementwise: a tensor of
    ``x``'s shape and dtype."""
    return F.gelu(x)


def relu(x: Tensor) -> Tensor:
    """``max(x, 0)``, elementwise: a tensor of ``x``'s shape and dtype."""
    return F.relu(x)


def layernorm(x: Tensor, w: Tensor | None, b: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Layer normalisation over the last dimension (``F.layer_norm``).

    Args:
        x: Input ``[..., H]``.
        w: Scale ``[H]`` or ``None``.
        b: Shift ``[H]`` or ``None``.
        eps: Added to the variance.

    Returns:
        Same shape as ``x``.
    """
    return F.layer_norm(x, (x.shape[-1],), w, b, eps)


def silu_mul(x: Tensor, up: Tensor | None = None, *, out: Tensor | None = None) -> Tensor:
    """``silu(gate) * up`` (SwiGLU's gating).

    Args:
        x: The gate, or ``[..., 2 * d]`` holding ``[gate | up]`` when ``up`` is ``None``.
        up: The up projection, same shape as the gate.
        out: Optional result buffer (:func:`.torch_outputs.check_out`: the gate's shape, the promoted dtype).

    Returns:
        ``[..., d]`` (``out`` when given).
    """
    gate, u = split_gate_up(x, up)
    if out is None:
        y: Tensor = F.silu(gate) * u
        return y
    inputs = (x,) if up is None else (x, up)
    check_out("silu_mul", out, gate.shape, torch.promote_types(gate.dtype, u.dtype), gate.device, inputs)
    return torch.mul(F.silu(gate), u, out=out)


def add_rmsnorm(
    x: Tensor, residual: Tensor, w: Tensor, eps: float = 1e-6, *, inplace: bool = False
) -> tuple[Tensor, Tensor]:
    """Residual add, then :func:`rmsnorm` of the sum.

    Args:
        x: Input ``[..., H]``.
        residual: Residual, same shape.
        w: Weight ``[H]``.
        eps: Added to the mean square.
        inplace: vLLM's ``fused_add_rms_norm``: write the norm into ``x`` and the sum into ``residual``
            (:func:`.torch_outputs.check_inplace`) and return them.

    Returns:
        ``(rmsnorm(x + residual), x + residual)``; new tensors (the inputs are not modified), or ``(x, residual)``
        holding them with ``inplace=True``.
    """
    check_inplace_flag(inplace)
    if inplace:
        check_inplace(x, residual, w)
    s = x + residual
    y = rmsnorm(s, w, eps)
    if not inplace:
        return y, s
    residual.copy_(s)
    x.copy_(y)
    return x, residual


def fused_qkv_projection(
    h: Tensor, qkv_w: Tensor, nh: int, nkv: int, hd: int, qkv_bias: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """One GEMM for q, k and v, split into heads.

    Args:
        h: Hidden states ``[..., H]``.
        qkv_w: ``[(nh + 2 * nkv) * hd, H]``, rows ``[q; k; v]``.
        nh: Query heads.
        nkv: Key/value heads.
        hd: Head dimension.
        qkv_bias: ``[(nh + 2 * nkv) * hd]`` or ``None``.

    Returns:
        ``(q [..., nh, hd], k [..., nkv, hd], v [..., nkv, hd])``.
    """
    q_rows, kv_rows = qkv_split_sizes(qkv_w.shape[0], nh, nkv, hd)
    qkv = F.linear(h, qkv_w, qkv_bias)
    q, k, v = qkv[..., :q_rows], qkv[..., q_rows : q_rows + kv_rows], qkv[..., q_rows + kv_rows :]
    lead = qkv.shape[:-1]
    return q.view(*lead, nh, hd), k.view(*lead, nkv, hd), v.view(*lead, nkv, hd)


#: Dtypes the torch RoPE computes with (fp32 inside).
ROPE_FLOATS = frozenset({"float16", "bfloat16", "float32"})


def check_rotary_call(
    positions: Tensor, query: Tensor, key: Tensor | None, head_size: int, cos_sin_cache: Tensor, is_neox: bool
) -> RopeShape:
    """Every check of ``rotary_embedding`` (:func:`.rope.check_rotary`), plus one device for all tensors and,
    for positions in host memory, the range check (device positions are never read back).

    Args:
        positions, query, key, head_size, cos_sin_cache, is_neox: The call's arguments (:func:`.rope.check_rotary`).

    Returns:
        The call's geometry.

    Raises:
        InvalidArgumentTypeError, InvalidArgumentError, UnsupportedDTypeError: as :func:`.rope.check_rotary`, or a
            host position outside the cache.
        InvalidDeviceError: The tensors are not all on one device.
    """
    sig = _rope_signature(positions, query, key, head_size, cos_sin_cache, is_neox)
    shape = _ROPE_CHECKED.get(sig) if sig is not None else None
    if shape is None:
        shape = _check_rotary_full(positions, query, key, head_size, cos_sin_cache, is_neox)
        if sig is not None:
            if len(_ROPE_CHECKED) >= 256:
                _ROPE_CHECKED.clear()
            _ROPE_CHECKED[sig] = shape
    if positions.device.type == "cpu":
        check_positions_in_range(positions.numpy(), shape.max_position)
    return shape


#: Signatures (shapes, dtypes, devices, options) that passed every check but the host range check.
_ROPE_CHECKED: dict[tuple[object, ...], RopeShape] = {}


def _rope_signature(
    positions: object, query: object, key: object, head_size: object, cos_sin_cache: object, is_neox: object
) -> tuple[object, ...] | None:
    """What the checks depend on, hashable; ``None`` when an argument is not of the type a signature needs."""
    tensors = (positions, query, cos_sin_cache) if key is None else (positions, query, cos_sin_cache, key)
    if type(head_size) is not int or type(is_neox) is not bool or not all(type(t) is torch.Tensor for t in tensors):
        return None
    return (head_size, is_neox, *((t.shape, t.dtype, t.device) for t in tensors))  # type: ignore[attr-defined]  # checked Tensors above


def _check_rotary_full(
    positions: Tensor, query: Tensor, key: Tensor | None, head_size: int, cos_sin_cache: Tensor, is_neox: bool
) -> RopeShape:
    shape = check_rotary(positions, query, key, head_size, cos_sin_cache, is_neox, ROPE_FLOATS)
    tensors = [("positions", positions), ("query", query), ("cos_sin_cache", cos_sin_cache)]
    if key is not None:
        tensors.append(("key", key))
    for label, t in tensors:
        if not isinstance(t, torch.Tensor):
            raise InvalidDeviceError(f"rotary_embedding: {label} must be a torch tensor; got {type(t).__name__}.")
    devices = {label: t.device for label, t in tensors}
    if len(set(devices.values())) > 1:
        found = ", ".join(f"{k} on {v}" for k, v in devices.items())
        raise InvalidDeviceError(f"rotary_embedding: every tensor must be on one device; got {found}.")
    return shape


def heads_view(x: Tensor, head_size: int) -> Tensor:
    """``x`` as ``[T, H, head_size]`` (a view: splitting a dimension never needs a copy).

    Args:
        x: ``[T, H * head_size]`` or ``[T, H, head_size]``.
        head_size: Dims per head.

    Returns:
        The 3-D view.
    """
    return x if x.dim() == 3 else x.view(*x.shape[:-1], x.shape[-1] // head_size, head_size)


def rotate_in_place(
    positions: Tensor, tensors: list[Tensor], head_size: int, cos_sin_cache: Tensor, is_neox: bool
) -> None:
    """The rotation itself, on checked arguments (no host sync; out-of-range device positions rotate by zero).

    Args:
        positions: Integer ``[T]``.
        tensors: ``query`` and ``key`` (``[T, H, head_size]`` views or 2-D).
        head_size: Dims per head.
        cos_sin_cache: ``[max_position, rot_dim]``.
        is_neox: The pairing style.
    """
    max_position, rot = cos_sin_cache.shape
    half = rot // 2
    pos = positions.to(torch.int64)
    valid = ((pos >= 0) & (pos < max_position)).unsqueeze(-1)
    rows = cos_sin_cache.index_select(0, torch.where(valid.squeeze(-1), pos, 0)).to(torch.float32)
    cos = torch.where(valid, rows[:, :half], 1.0).unsqueeze(1)
    sin = torch.where(valid, rows[:, half:], 0.0).unsqueeze(1)
    for x in tensors:
        x3 = heads_view(x, head_size)
        x1, x2 = (x3[..., :half], x3[..., half:rot]) if is_neox else (x3[..., 0:rot:2], x3[..., 1:rot:2])
        f1, f2 = x1.to(torch.float32), x2.to(torch.float32)
        o1, o2 = f1 * cos - f2 * sin, f2 * cos + f1 * sin
        x1.copy_(o1)
        x2.copy_(o2)


def rotary_embedding(
    positions: Tensor,
    query: Tensor,
    key: Tensor | None,
    head_size: int,
    cos_sin_cache: Tensor,
    is_neox: bool = True,
) -> None:
    """Rotary position embedding in place on ``query`` and ``key`` (semantics in :mod:`.rope`).

    Args:
        positions: Integer ``[T]``.
        query: ``[T, Hq * head_size]`` or ``[T, Hq, head_size]``; rotated in place.
        key: ``[T, Hkv * head_size]`` or ``[T, Hkv, head_size]``, or ``None``; rotated in place.
        head_size: Dims per head.
        cos_sin_cache: ``[max_position, rot_dim]``: cos in the first half of the columns, sin in the second.
        is_neox: ``True`` for NeoX/Llama halves, ``False`` for GPT-J interleaved pairs.

    Raises:
        InvalidArgumentTypeError, InvalidArgumentError, UnsupportedDTypeError, InvalidDeviceError: see
            :func:`check_rotary_call`; nothing is written then.
    """
    check_rotary_call(positions, query, key, head_size, cos_sin_cache, is_neox)
    rotate_in_place(positions, [query] if key is None else [query, key], head_size, cos_sin_cache, is_neox)
