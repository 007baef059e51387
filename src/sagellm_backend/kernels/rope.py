"""Rotary position embedding (RoPE): the ``rotary_embedding`` kernel's semantics and argument checks.

``rotary_embedding(positions, query, key, head_size, cos_sin_cache, is_neox=True) -> None`` rotates
``query`` and ``key`` in place, as vLLM's ``rotary_embedding`` op does:

* ``positions``: integer ``[T]`` (int64 or int32), the position of each token.
* ``query``: ``[T, Hq * head_size]`` or ``[T, Hq, head_size]``; ``key``: ``[T, Hkv * head_size]`` or
  ``[T, Hkv, head_size]`` in the query's dtype, or ``None`` (only ``query`` is rotated).
* ``cos_sin_cache``: ``[max_position, rot_dim]``, row ``p`` holding ``cos(p * f_i)`` in its first
  ``rot_dim / 2`` columns and ``sin(p * f_i)`` in the last ``rot_dim / 2``; ``rot_dim`` is even and at most
  ``head_size``. Only the first ``rot_dim`` dims of each head are rotated (partial rotary); the rest are
  left as they are.
* ``is_neox=True`` pairs dim ``i`` with dim ``i + rot_dim / 2`` (GPT-NeoX / Llama, Hugging Face's
  ``rotate_half``); ``is_neox=False`` pairs dims ``2i`` and ``2i + 1`` (GPT-J, interleaved). For a pair
  ``(x1, x2)`` and ``(c, s)`` of column ``i``: ``x1' = x1 c - x2 s``, ``x2' = x2 c + x1 s``, computed in fp32
  and rounded once to the tensor's dtype.

Positions outside ``[0, max_position)``: when ``positions`` lives in host memory they are checked and raise
:class:`~sagellm_backend.errors.InvalidArgumentError` before anything is written. Positions in device memory
are never read back (no host sync, so the op can be captured in a CUDA graph); a token whose position is
out of range is left unrotated and nothing outside the cache is read (masked loads).

This module imports no tensor library: the checks read ``shape``, ``ndim`` and ``dtype`` only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import InvalidArgumentError, InvalidArgumentTypeError, UnsupportedDTypeError

__all__ = ["INT_DTYPES", "RopeShape", "check_cos_sin_cache", "check_positions_in_range", "check_rotary", "dtype_name"]

#: Element types accepted for ``positions``.
INT_DTYPES = frozenset({"int32", "int64"})


@dataclass(frozen=True)
class RopeShape:
    """The checked geometry of one call.

    Attributes:
        tokens: ``T``.
        q_heads: Query heads.
        k_heads: Key heads (0 when ``key`` is ``None``).
        head_size: Dims per head.
        rot_dim: Rotated dims per head (``cos_sin_cache.shape[1]``).
        max_position: Rows of the cos/sin cache.
    """

    tokens: int
    q_heads: int
    k_heads: int
    head_size: int
    rot_dim: int
    max_position: int


def dtype_name(dtype: object) -> str:
    """``"float16"`` for ``torch.float16`` and ``numpy.float16`` alike.

    Args:
        dtype: A torch or numpy dtype.

    Returns:
        The name without a ``torch.`` prefix.
    """
    return str(dtype).removeprefix("torch.")


def _heads(label: str, x: Any, tokens: int, head_size: int) -> int:
    shape = tuple(getattr(x, "shape", ()))
    if not hasattr(x, "dtype") or len(shape) not in (2, 3):
        raise InvalidArgumentTypeError(
            f"rotary_embedding: {label} must be a tensor [T, H * head_size] or [T, H, head_size]; "
            f"got {type(x).__name__} of shape {shape}."
        )
    if shape[0] != tokens:
        raise InvalidArgumentError(
            f"rotary_embedding: {label} has {shape[0]} tokens but positions has {tokens}; give one position per token."
        )
    if len(shape) == 3:
        if shape[2] != head_size:
            raise InvalidArgumentError(
                f"rotary_embedding: {label} has head dimension {shape[2]} but head_size={head_size}."
            )
        return int(shape[1])
    if shape[1] % head_size:
        raise InvalidArgumentError(
            f"rotary_embedding: {label} has {shape[1]} columns, not a multiple of head_size={head_size}; "
            "pass [T, H * head_size] or [T, H, head_size]."
        )
    return int(shape[1]) // head_size


def _tensor(
    label: str, x: Any, rank: int, shape_text: str, dtypes: frozenset[str], dtypes_text: str
) -> tuple[int, ...]:
    """The shape of ``x``, a tensor of ``rank`` dims and a dtype in ``dtypes``, or a typed error."""
    shape = tuple(getattr(x, "shape", ()))
    if not hasattr(x, "dtype") or len(shape) != rank:
        raise InvalidArgumentTypeError(
            f"rotary_embedding: {label} must be {shape_text}; got {type(x).__name__} of shape {shape}."
        )
    if dtype_name(x.dtype) not in dtypes:
        raise UnsupportedDTypeError(f"rotary_embedding: {label} must be {dtypes_text}; got {dtype_name(x.dtype)}.")
    return tuple(int(n) for n in shape)


def check_rotary(
    positions: Any, query: Any, key: Any, head_size: object, cos_sin_cache: Any, is_neox: object, floats: frozenset[str]
) -> RopeShape:
    """Check the arguments of ``rotary_embedding`` (module docstring) without reading any element.

    Args:
        positions: Integer ``[T]``.
        query: ``[T, Hq * head_size]`` or ``[T, Hq, head_size]``.
        key: Same layout with ``Hkv`` heads, or ``None``.
        head_size: Dims per head.
        cos_sin_cache: ``[max_position, rot_dim]``.
        is_neox: The pairing style.
        floats: Dtype names the calling backend computes with.

    Returns:
        The call's :class:`RopeShape`.

    Raises:
        InvalidArgumentTypeError: A non-tensor argument, a non-int ``head_size`` or a non-bool ``is_neox``.
        InvalidArgumentError: Shapes that disagree, an odd or too wide ``rot_dim``, an empty cache.
        UnsupportedDTypeError: Non-integer positions, a query/key/cache dtype outside ``floats``, or a key whose
            dtype differs from the query's.
    """
    if isinstance(head_size, bool) or not isinstance(head_size, int) or head_size <= 0:
        raise InvalidArgumentTypeError(f"rotary_embedding: head_size must be a positive int; got {head_size!r}.")
    if not isinstance(is_neox, bool):
        raise InvalidArgumentTypeError(
            f"rotary_embedding: is_neox must be a bool (True: NeoX/Llama halves, False: GPT-J pairs); got {is_neox!r}."
        )
    tokens = _tensor("positions", positions, 1, "a 1-D integer tensor [T]", INT_DTYPES, "int64 or int32")[0]
    q_heads = _heads("query", query, tokens, head_size)
    k_heads = 0 if key is None else _heads("key", key, tokens, head_size)
    qdt = dtype_name(query.dtype)
    if qdt not in floats:
        raise UnsupportedDTypeError(f"rotary_embedding: query dtype {qdt} is not one of {sorted(floats)}.")
    if key is not None and dtype_name(key.dtype) != qdt:
        raise UnsupportedDTypeError(
            f"rotary_embedding: key dtype {dtype_name(key.dtype)} differs from the query's {qdt}; give both one dtype."
        )
    max_position, rot_dim = check_cos_sin_cache(cos_sin_cache, head_size, floats)
    return RopeShape(tokens, q_heads, k_heads, head_size, rot_dim, max_position)


def check_cos_sin_cache(cos_sin_cache: Any, head_size: int, floats: frozenset[str]) -> tuple[int, int]:
    """Check a cos/sin cache (module docstring) for heads of ``head_size`` dims without reading any element.

    Args:
        cos_sin_cache: ``[max_position, rot_dim]``.
        head_size: Dims per head.
        floats: Dtype names the calling backend computes with.

    Returns:
        ``(max_position, rot_dim)``.

    Raises:
        InvalidArgumentTypeError: Not a 2-D tensor.
        InvalidArgumentError: An odd or too wide ``rot_dim``, or no rows.
        UnsupportedDTypeError: A dtype outside ``floats``.
    """
    max_position, rot_dim = _tensor(
        "cos_sin_cache", cos_sin_cache, 2, "a 2-D tensor [max_position, rot_dim]", floats, f"one of {sorted(floats)}"
    )
    if rot_dim <= 0 or rot_dim % 2 or rot_dim > head_size:
        raise InvalidArgumentError(
            f"rotary_embedding: cos_sin_cache has {rot_dim} columns; rot_dim must be even and in 2..head_size "
            f"({head_size}): cos in the first rot_dim / 2 columns, sin in the last."
        )
    if max_position == 0:
        raise InvalidArgumentError("rotary_embedding: cos_sin_cache has no rows; build it for max_position >= 1.")
    return max_position, rot_dim


def check_positions_in_range(values: Any, max_position: int) -> None:
    """Raise when a host-side position falls outside the cos/sin cache.

    Args:
        values: The positions as a host array (numpy, or a CPU tensor's ``numpy()``).
        max_position: Rows of the cache.

    Raises:
        InvalidArgumentError: Some position is negative or ``>= max_position``; nothing was written.
    """
    if not len(values):
        return
    lo, hi = int(values.min()), int(values.max())
    if lo < 0 or hi >= max_position:
        bad = lo if lo < 0 else hi
        index = int((values == bad).nonzero()[0][0])
        raise InvalidArgumentError(
            f"rotary_embedding: positions[{index}] = {bad} is outside the cos/sin cache, which has rows "
            f"0..{max_position - 1}; build the cache for the longest context or fix the position.",
            position=bad,
            max_position=max_position,
        )
