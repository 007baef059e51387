"""Per-layer K/V views of a pool's arena, in the layout paged attention reads.

The arena is block-major, ``(num_blocks, kv_factor, num_layers, block_size, num_kv_heads, head_dim)``,
so for every layer ``arena[:, 0, layer]`` is a ``(num_blocks, block_size, num_kv_heads, head_dim)``
view whose inner three dims are contiguous and whose block stride is the whole block: exactly the
cache shape :meth:`PagedAttentionBackend.get_kv_cache_shape` gives, with pool block ids as the
block-table ids. Writing through the views writes the pool's blocks, so ``copy_blocks``,
``make_writable``, ``swap_out``/``swap_in`` and ``migrate_blocks`` move whole blocks of every layer.

With ``page_layout="HND"`` the same bytes are read as ``(num_blocks, kv_factor, num_layers, num_kv_heads,
block_size, head_dim)``: each layer's page is stored head-major (FlashInfer's HND) and the views are its
``(num_blocks, block_size, num_kv_heads, head_dim)`` permutation, which paged attention reads as it reads token-major
pages. The pool moves whole blocks and never interprets them, so either layout works with every pool operation;
one pool's users must keep to one layout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..core.validate import check_count
from ..errors import InvalidArgumentError, InvalidArgumentTypeError, UnsupportedOperationError
from ..protocol import DType

if TYPE_CHECKING:
    from .geometry import KVGeometry

__all__ = ["PAGE_LAYOUTS", "layer_kv_caches", "same_layout"]

_ATTENTION_DTYPES = (DType.FP32, DType.FP16, DType.BF16, DType.FP8)
#: Page layouts of the views: token-major (``[block_size, Hkv, D]`` pages) and head-major (``[Hkv, block_size, D]``).
PAGE_LAYOUTS = ("NHD", "HND")


def layer_kv_caches(
    arena: Any, geometry: KVGeometry, dtype: DType, layer: object = None, page_layout: object = "NHD"
) -> Any:
    """``(K, V)`` views of one layer of a pool's arena, or a list of them for every layer.

    Args:
        arena: The pool's arena (a torch tensor).
        geometry: Its geometry (K and V).
        dtype: Its dtype (fp32/fp16/bf16, or FP8 of either format).
        layer: Layer index, or ``None`` for all layers.
        page_layout: ``"NHD"`` (token-major pages, contiguous views) or ``"HND"`` (head-major pages, permuted views).

    Returns:
        ``(K, V)`` or ``[(K, V), ...]``; each ``(num_blocks, block_size, num_kv_heads, head_dim)``: torch tensors
        of the arena's dtype (``torch.float8_e4m3fn``/``torch.float8_e5m2`` for FP8) on torch providers, numpy
        arrays on the Mock (bf16 as raw ``uint16`` bits, FP8 as raw ``uint8`` bits).

    Raises:
        UnsupportedOperationError: A K-only/latent geometry, or an int8/int4 pool.
        InvalidArgumentError: layer out of range, or a page layout other than :data:`PAGE_LAYOUTS`.
        InvalidArgumentTypeError: ``page_layout`` not a str.
    """
    if geometry.kv_factor != 2:
        raise UnsupportedOperationError(
            f"this pool's geometry has kv_factor={geometry.kv_factor} (one latent or K-only cache): "
            "there are no separate K and V views."
        )
    if dtype not in _ATTENTION_DTYPES:
        raise UnsupportedOperationError(
            f"attention reads {'/'.join(d.value for d in _ATTENTION_DTYPES)} caches (fp8 as fp8_e4m3 or fp8_e5m2); "
            f"this pool stores {dtype.value}. Create it with one of those."
        )
    if not isinstance(page_layout, str):
        raise InvalidArgumentTypeError(
            f"page_layout must be a str, one of {PAGE_LAYOUTS}; got {type(page_layout).__name__}."
        )
    if page_layout not in PAGE_LAYOUTS:
        raise InvalidArgumentError(f"page_layout must be one of {PAGE_LAYOUTS}; got {page_layout!r}.")
    index = None if layer is None else check_count("layer", layer, minimum=0)
    if index is not None and not 0 <= index < geometry.num_layers:
        raise InvalidArgumentError(f"layer {index} is out of range: this pool has layers 0..{geometry.num_layers - 1}.")
    source = arena
    if page_layout == "HND":  # the same bytes, each page [Hkv, block_size, D]; views swap the two back
        nb, kv, nl, bs, hkv, d = arena.shape
        source = arena.reshape(nb, kv, nl, hkv, bs, d)
        if _address(source) != _address(arena):  # a copy: views of it would not write the pool
            raise UnsupportedOperationError("this pool's arena is not contiguous; head-major views need it to be.")

    def view(kv_index: int, i: int) -> Any:
        v = source[:, kv_index, i]
        return v.swapaxes(1, 2) if page_layout == "HND" else v

    if index is None:
        return [(view(0, i), view(1, i)) for i in range(geometry.num_layers)]
    return view(0, index), view(1, index)


def _address(a: Any) -> int:
    """Address of a torch tensor's or numpy array's first element."""
    return int(a.data_ptr()) if hasattr(a, "data_ptr") else int(a.__array_interface__["data"][0])


def same_layout(fixed: str | None, asked: str) -> str:
    """The page layout a pool keeps: ``asked`` when the pool has none yet or the same one.

    Args:
        fixed: The pool's layout, or None before its first views.
        asked: A layout :func:`layer_kv_caches` accepted.

    Returns:
        The layout.

    Raises:
        InvalidArgumentError: ``asked`` differs from ``fixed``.
    """
    if fixed not in (None, asked):
        raise InvalidArgumentError(
            f"this pool's blocks hold {fixed} pages; ask for those views (page_layout={fixed!r})."
        )
    return asked
