"""Per-layer K/V views of a pool's arena, in the layout paged attention reads.

The arena is block-major, ``(num_blocks, kv_factor, num_layers, block_size, num_kv_heads, head_dim)``,
so for every layer ``arena[:, 0, layer]`` is a ``(num_blocks, block_size, num_kv_heads, head_dim)``
view whose inner three dims are contiguous and whose block stride is the whole block: exactly the
cache shape :meth:`PagedAttentionBackend.get_kv_cache_shape` gives, with pool block ids as the
block-table ids. Writing through the views writes the pool's blocks, so ``copy_blocks``,
``make_writable``, ``swap_out``/``swap_in`` and ``migrate_blocks`` move whole blocks of every layer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..core.validate import check_count
from ..errors import InvalidArgumentError, UnsupportedOperationError
from ..protocol import DType

if TYPE_CHECKING:
    from .geometry import KVGeometry

__all__ = ["layer_kv_caches"]

_ATTENTION_DTYPES = (DType.FP32, DType.FP16, DType.BF16, DType.FP8)


def layer_kv_caches(arena: Any, geometry: KVGeometry, dtype: DType, layer: object = None) -> Any:
    """``(K, V)`` views of one layer of a pool's arena, or a list of them for every layer.

    Args:
        arena: The pool's arena (a torch tensor).
        geometry: Its geometry (K and V).
        dtype: Its dtype (fp32/fp16/bf16, or FP8 of either format).
        layer: Layer index, or ``None`` for all layers.

    Returns:
        ``(K, V)`` or ``[(K, V), ...]``; each ``(num_blocks, block_size, num_kv_heads, head_dim)``: torch tensors
        of the arena's dtype (``torch.float8_e4m3fn``/``torch.float8_e5m2`` for FP8) on torch providers, numpy
        arrays on the Mock (bf16 as raw ``uint16`` bits, FP8 as raw ``uint8`` bits).

    Raises:
        UnsupportedOperationError: A K-only/latent geometry, or an int8/int4 pool.
        InvalidArgumentError: layer out of range.
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
    if layer is None:
        return [(arena[:, 0, i], arena[:, 1, i]) for i in range(geometry.num_layers)]
    index = check_count("layer", layer, minimum=0)
    if not 0 <= index < geometry.num_layers:
        raise InvalidArgumentError(f"layer {index} is out of range: this pool has layers 0..{geometry.num_layers - 1}.")
    return arena[:, 0, index], arena[:, 1, index]
