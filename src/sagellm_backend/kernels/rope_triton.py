"""``rotary_embedding`` as one Triton kernel for CUDA (semantics in :mod:`.rope`).

One program rotates ``HEADS`` heads of one token: grid ``(T, q head blocks + k head blocks)``. The
position is loaded from device memory and never read back on the host, so a launch can be captured
in a CUDA graph and replayed with new positions. A position outside ``[0, max_position)`` reads row 0
of the cache and uses ``cos = 1, sin = 0``: the token is left unrotated and nothing outside the cache
is read.

:func:`.triton_ops.rotary_embedding` checks the arguments and launches it.

Imported only on first use: importing it imports torch and Triton.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import triton
import triton.language as tl

from .rope import RopeShape
from .rope_tiles import cos_sin_at
from .triton_launch import BoundCache, cdiv, next_power_of_2

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["launch_rotary", "rope_config", "rope_strides"]


@triton.jit
def _rotate_heads(  # type: ignore[no-untyped-def]  # a Triton JIT helper: untyped pointers and constexprs
    base, n_heads, s_head, h0, o1, o2, im, cos, sin, HEADS: tl.constexpr
):
    """Rotate heads ``h0 .. h0 + HEADS`` of one token at ``base`` in place."""
    h = h0 + tl.arange(0, HEADS)
    m = (h < n_heads)[:, None] & im[None, :]
    row = base + h[:, None].to(tl.int64) * s_head
    x1 = tl.load(row + o1[None, :], mask=m, other=0.0).to(tl.float32)
    x2 = tl.load(row + o2[None, :], mask=m, other=0.0).to(tl.float32)
    ty = base.dtype.element_ty
    tl.store(row + o1[None, :], (x1 * cos[None, :] - x2 * sin[None, :]).to(ty), mask=m)
    tl.store(row + o2[None, :], (x2 * cos[None, :] + x1 * sin[None, :]).to(ty), mask=m)


@triton.jit
def _rope_kernel(  # type: ignore[no-untyped-def]  # a Triton JIT kernel: untyped pointers and constexprs
    pos_ptr,
    q_ptr,
    k_ptr,
    cs_ptr,
    max_position,
    q_heads,
    k_heads,
    sq_t,
    sq_h,
    sk_t,
    sk_h,
    s_cs,
    q_blocks,
    HALF: tl.constexpr,
    HALF_BLOCK: tl.constexpr,
    HEADS: tl.constexpr,
    NEOX: tl.constexpr,
):
    t = tl.program_id(0).to(tl.int64)
    blk = tl.program_id(1)
    pos = tl.load(pos_ptr + t).to(tl.int64)
    i = tl.arange(0, HALF_BLOCK)
    im = i < HALF
    cos, sin = cos_sin_at(cs_ptr, s_cs, max_position, pos, i, im, HALF)
    if NEOX:
        o1 = i
        o2 = i + HALF
    else:
        o1 = 2 * i
        o2 = 2 * i + 1
    if blk < q_blocks:
        _rotate_heads(q_ptr + t * sq_t, q_heads, sq_h, blk * HEADS, o1, o2, im, cos, sin, HEADS)
    else:
        _rotate_heads(k_ptr + t * sk_t, k_heads, sk_h, (blk - q_blocks) * HEADS, o1, o2, im, cos, sin, HEADS)


def rope_config(rot_dim: int) -> tuple[int, int, int]:
    """``(HALF_BLOCK, HEADS, num_warps)`` of a launch.

    Args:
        rot_dim: Rotated dims per head.

    Returns:
        Pair columns per program (a power of two), heads per program, warps per program.
    """
    half_block = next_power_of_2(rot_dim // 2)
    heads = max(1, min(8, 512 // half_block))
    return half_block, heads, max(1, min(4, heads * half_block // 256))


def rope_strides(query: Tensor, key: Tensor | None, cos_sin_cache: Tensor) -> tuple[int, int, int, int, int]:
    """The element strides a launch passes: query token and head, key token and head (the query's when ``key`` is
    None), cos/sin row.

    Args:
        query: ``[T, Hq, head_size]`` view.
        key: ``[T, Hkv, head_size]`` view, or ``None``.
        cos_sin_cache: ``[max_position, rot_dim]``.

    Returns:
        ``(sq_t, sq_h, sk_t, sk_h, s_cs)``.
    """
    k = query if key is None else key
    return query.stride(0), query.stride(1), k.stride(0), k.stride(1), cos_sin_cache.stride(0)


def launch_rotary(
    positions: Tensor, query: Tensor, key: Tensor | None, shape: RopeShape, cos_sin_cache: Tensor, is_neox: bool,
    strides: tuple[int, int, int, int, int],
) -> None:  # fmt: skip
    """Launch the kernel on checked arguments whose last dimensions are contiguous.

    Args:
        positions: Integer ``[T]`` (contiguous).
        query: The query (any view of its data; ``strides`` say how to walk it), unit stride in the last dim.
        key: The key likewise, or ``None``.
        shape: The checked geometry.
        cos_sin_cache: ``[max_position, rot_dim]``, unit column stride.
        is_neox: The pairing style.
        strides: :func:`rope_strides` of the ``[T, H, head_size]`` views.
    """
    if shape.tokens == 0:
        return
    half_block, heads, warps = rope_config(shape.rot_dim)
    q_blocks = cdiv(shape.q_heads, heads)
    k_blocks = cdiv(shape.k_heads, heads)
    k = query if key is None else key
    sq_t, sq_h, sk_t, sk_h, s_cs = strides
    grid = (shape.tokens, q_blocks + k_blocks)
    _ROPE(
        (query.get_device(), shape, strides, is_neox, key is None),
        grid,
        (positions, query, k, cos_sin_cache, shape.max_position, shape.q_heads, shape.k_heads, sq_t, sq_h, sk_t,
         sk_h, s_cs, q_blocks),
        {"HALF": shape.rot_dim // 2, "HALF_BLOCK": half_block, "HEADS": heads, "NEOX": is_neox, "num_warps": warps},
        (positions, query, k, cos_sin_cache),
    )  # fmt: skip


#: Bound launches per geometry (the launch arguments that are not tensors, and the device, are the key).
_ROPE = BoundCache(_rope_kernel)
