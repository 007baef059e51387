"""RoPE applied inside the decode of :class:`~.wrapper.PagedAttentionWrapper` (``run(..., cos_sin_cache=)``): the
query and the new key are rotated to their position by the fused Triton launch, so no RoPE launch precedes the
attention; other paths rotate copies with the torch kernel first. The semantics are those of the kernel registry's
``rotary_embedding`` (:mod:`..kernels.rope`).

Imported lazily (it imports torch).
"""

from __future__ import annotations

import torch

from ..errors import InvalidArgumentError, InvalidArgumentTypeError, InvalidDeviceError
from ..kernels.rope import check_cos_sin_cache
from ..kernels.torch_ops import ROPE_FLOATS, rotate_in_place

__all__ = ["check_rope", "rotated_copies"]


def check_rope(
    cos_sin_cache: object, is_neox: object, head_size: int, device: torch.device
) -> tuple[torch.Tensor, bool] | None:
    """The checked ``(cos_sin_cache, is_neox)`` of a ``run``, or None without a cache.

    Args:
        cos_sin_cache: ``[max_position, rot_dim]`` float tensor on the wrapper's device (cos then sin halves), or
            None.
        is_neox: True for NeoX/Llama halves, False for GPT-J pairs, None for the default (True); only with a cache.
        head_size: The wrapper's head size.
        device: The query's device.

    Returns:
        ``(cos_sin_cache, is_neox)`` or None.

    Raises:
        InvalidArgumentTypeError: Not a tensor, ``is_neox`` not a bool, or ``is_neox`` without a cache.
        InvalidArgumentError: Not 2-D, an odd or too wide ``rot_dim``, no rows, or a strided last dimension.
        UnsupportedDTypeError: Not fp16/bf16/fp32.
        InvalidDeviceError: Not on the query's device.
    """
    if cos_sin_cache is None:
        if is_neox is not None:
            raise InvalidArgumentTypeError("is_neox applies RoPE with cos_sin_cache; pass both or neither.")
        return None
    if not isinstance(cos_sin_cache, torch.Tensor):
        raise InvalidArgumentTypeError(f"cos_sin_cache must be a torch tensor; got {type(cos_sin_cache).__name__}.")
    if is_neox is not None and not isinstance(is_neox, bool):
        raise InvalidArgumentTypeError(f"is_neox must be a bool or None; got {type(is_neox).__name__}.")
    cs = cos_sin_cache
    if cs.dim() != 2:
        raise InvalidArgumentError(f"cos_sin_cache must be [max_position, rot_dim]; got shape {tuple(cs.shape)}.")
    check_cos_sin_cache(cs, head_size, ROPE_FLOATS)
    if cs.device != device:
        raise InvalidDeviceError(f"cos_sin_cache is on {cs.device} but the query on {device}; move it there.")
    if cs.stride(1) != 1:
        raise InvalidArgumentError(f"cos_sin_cache needs a unit stride in its last dimension; got {cs.stride()}.")
    return cs, True if is_neox is None else is_neox


def rotated_copies(
    positions: torch.Tensor, query: torch.Tensor, key: torch.Tensor, rope: tuple[torch.Tensor, bool], head_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Copies of ``query`` and ``key`` rotated to ``positions`` (the paths without the fused launch).

    Args:
        positions: ``[B]`` positions on the device.
        query: ``[B, Hq, D]``.
        key: ``[B, Hkv, D]``.
        rope: Checked ``(cos_sin_cache, is_neox)``.
        head_size: ``D``.

    Returns:
        ``(query, key)`` rotated; the inputs are left as they are.
    """
    q, k = query.clone(), key.clone()
    cs, is_neox = rope
    rotate_in_place(positions, [q, k], head_size, cs, is_neox)  # positions past the cache: unrotated
    return q, k
