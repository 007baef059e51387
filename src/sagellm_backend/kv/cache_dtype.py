"""KV-cache element types: a protocol dtype, and for ``fp8`` which FP8 format the bytes hold.

``create_kv_pool(dtype=...)`` takes a :class:`~sagellm_backend.protocol.DType` (or its value) or one of
vLLM's cache-dtype names for FP8, ``"fp8_e4m3"`` and ``"fp8_e5m2"``. The protocol's ``fp8`` is E4M3
(``torch.float8_e4m3fn``), as in vLLM where ``"fp8"`` means ``"fp8_e4m3"``. Both FP8 formats take one byte
per element, so the pool moves them as bytes; only the arena's torch dtype differs (its torch arena is
viewed as ``torch.float8_e5m2`` for E5M2). The Mock stores every FP8 format as raw ``uint8`` bits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import InvalidArgumentError, UnsupportedDTypeError
from ..protocol import DType, coerce_dtype

__all__ = ["FP8_CACHE_DTYPES", "KVCacheDType", "resolve_kv_cache_dtype", "view_arena"]

#: vLLM's FP8 cache-dtype names -> torch names of the formats.
FP8_CACHE_DTYPES: dict[str, str] = {"fp8_e4m3": "float8_e4m3fn", "fp8_e5m2": "float8_e5m2"}


@dataclass(frozen=True)
class KVCacheDType:
    """What a KV cache stores.

    Attributes:
        dtype: The protocol dtype (``fp8`` for both FP8 formats: the byte width and the storage rule).
        fp8_format: torch name of the FP8 format (``"float8_e4m3fn"``/``"float8_e5m2"``), None for other dtypes.
    """

    dtype: DType
    fp8_format: str | None = None

    @property
    def name(self) -> str:
        """``"fp8_e4m3"``/``"fp8_e5m2"`` for FP8, else the protocol value (``"fp16"``...)."""
        if self.fp8_format is None:
            return self.dtype.value
        return next(k for k, v in FP8_CACHE_DTYPES.items() if v == self.fp8_format)


def resolve_kv_cache_dtype(value: object) -> KVCacheDType:
    """The cache dtype of a ``create_kv_pool(dtype=)`` argument.

    Args:
        value: A :class:`DType`, its value (``"fp8"`` is E4M3), or ``"fp8_e4m3"``/``"fp8_e5m2"``.

    Returns:
        The cache dtype.

    Raises:
        InvalidArgumentTypeError: Not a string or string enum.
        InvalidArgumentError: An unknown name (the message lists the accepted ones).
    """
    if isinstance(value, str) and value.lower() in FP8_CACHE_DTYPES:
        return KVCacheDType(DType.FP8, FP8_CACHE_DTYPES[value.lower()])
    try:
        dt = coerce_dtype(value)
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(f"{exc} A KV cache also takes {sorted(FP8_CACHE_DTYPES)}.") from None
    return KVCacheDType(dt, FP8_CACHE_DTYPES["fp8_e4m3"] if dt is DType.FP8 else None)


def view_arena(arena: Any, cache_dtype: KVCacheDType) -> Any:
    """The arena as its cache dtype: a torch arena of an E5M2 cache is viewed as ``torch.float8_e5m2``.

    The storage allocates FP8 as ``float8_e4m3fn`` (torch) or ``uint8`` bits (numpy); a view with the same
    element size changes how the bytes read, never the bytes.

    Args:
        arena: The storage's array for the pool.
        cache_dtype: What the pool stores.

    Returns:
        ``arena`` or a view of it.

    Raises:
        UnsupportedDTypeError: This torch has no dtype of that name.
    """
    fmt = cache_dtype.fp8_format
    if fmt is None or not hasattr(arena, "data_ptr"):
        return arena
    import torch

    target = getattr(torch, fmt, None)
    if target is None:
        raise UnsupportedDTypeError(
            f"a {cache_dtype.name} KV cache needs torch.{fmt}; this torch ({torch.__version__}) has none. "
            "Upgrade torch (>= 2.1) or use fp8_e4m3."
        )
    return arena if arena.dtype == target else arena.view(target)
