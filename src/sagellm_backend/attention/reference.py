"""Float64 reference for paged attention, and builders of arena-backed caches and shuffled block tables.

Used by :mod:`sagellm_backend.attention.testing` and the tests. Torch is imported inside the functions.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["make_arena_caches", "make_block_tables", "reference_paged_decode", "reference_paged_prefill"]


def make_arena_caches(
    num_blocks: int,
    block_size: int,
    num_kv_heads: int,
    head_dim: int,
    dtype: torch.dtype,
    device: torch.device | str,
    *,
    generator: torch.Generator,
    num_layers: int = 2,
    layer: int = 1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random arena ``[num_blocks, 2, num_layers, block_size, Hkv, D]`` and one layer's K and V views.

    Args:
        num_blocks: Blocks in the arena.
        block_size: Tokens per block.
        num_kv_heads: KV heads.
        head_dim: Head dimension.
        dtype: Element dtype.
        device: Where the arena lives.
        generator: CPU generator for the random contents.
        num_layers: Layers in the arena (makes ``stride(0)`` larger than one block of one layer).
        layer: Which layer's views to return.

    Returns:
        ``(arena, k_cache, v_cache)``; the caches are ``[num_blocks, block_size, Hkv, D]`` views of the arena.
    """
    import torch

    shape = (num_blocks, 2, num_layers, block_size, num_kv_heads, head_dim)
    arena = torch.randn(shape, generator=generator, dtype=torch.float32).to(dtype=dtype, device=device)
    return arena, arena[:, 0, layer], arena[:, 1, layer]


def make_block_tables(
    key_lens: list[int],
    block_size: int,
    num_blocks: int,
    *,
    generator: torch.Generator,
    pad_value: int = -1,
    extra_cols: int = 1,
) -> torch.Tensor:
    """Block tables (int64, CPU) giving every sequence distinct, shuffled blocks; unused entries = ``pad_value``.

    Args:
        key_lens: Key positions per sequence.
        block_size: Tokens per block.
        num_blocks: Blocks available (must cover ``sum(ceil(len / block_size))``).
        generator: CPU generator for the shuffle.
        pad_value: Value of entries past each sequence's last block.
        extra_cols: Columns beyond the longest sequence's need.

    Returns:
        ``[len(key_lens), max_blocks + extra_cols]`` int64 tensor.

    Raises:
        ValueError: ``num_blocks`` is too small.
    """
    import torch

    need = [max(1, math.ceil(n / block_size)) for n in key_lens]
    if sum(need) > num_blocks:
        raise ValueError(f"need {sum(need)} blocks for key_lens={key_lens}; only {num_blocks} available")
    perm = torch.randperm(num_blocks, generator=generator)
    table = torch.full((len(key_lens), max(need) + extra_cols), pad_value, dtype=torch.int64)
    start = 0
    for i, n in enumerate(need):
        table[i, :n] = perm[start : start + n]
        start += n
    return table


def _gather_keys(cache: torch.Tensor, table_row: torch.Tensor, length: int) -> torch.Tensor:
    """Float64 CPU ``[length, Hkv, D]`` of one sequence's key (or value) positions ``0..length-1``."""
    import torch

    bs = cache.shape[1]
    nb = math.ceil(length / bs)
    ids = table_row[:nb].to(device=cache.device, dtype=torch.int64)
    pages = cache.index_select(0, ids).to(device="cpu", dtype=torch.float64)
    return pages.reshape(nb * bs, cache.shape[2], cache.shape[3])[:length]


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_pos: torch.Tensor, scale: float) -> torch.Tensor:
    """Float64 SDPA of ``q [n,Hq,D]`` over ``k,v [L,Hkv,D]``; query ``j`` sees keys ``0..q_pos[j]``."""
    import torch
    import torch.nn.functional as F

    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    mask = torch.arange(k.shape[0])[None, :] <= q_pos[:, None]  # [n, L], True = attend
    out = F.scaled_dot_product_attention(
        q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), attn_mask=mask, scale=scale
    )
    return out.transpose(0, 1)


def reference_paged_decode(
    query: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """Float64 CPU reference of ``paged_decode``: query ``i`` attends to key positions ``0..seq_lens[i]-1``.

    Args:
        query: ``[B, Hq, D]``.
        k_cache: ``[num_blocks, block_size, Hkv, D]``.
        v_cache: Same shape as ``k_cache``.
        block_tables: ``[B, max_blocks]``.
        seq_lens: ``[B]`` visible key positions.
        scale: Softmax scale.

    Returns:
        ``[B, Hq, D]`` float64 on CPU.
    """
    import torch

    one_each = torch.arange(query.shape[0] + 1)  # decode is a prefill of one new query per sequence
    return reference_paged_prefill(query, k_cache, v_cache, block_tables, one_each, seq_lens, scale)


def reference_paged_prefill(
    query: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """Float64 CPU reference of ``paged_prefill`` (causal, with cached context, all keys read from the pages).

    Args:
        query: ``[T, Hq, D]`` packed.
        k_cache: ``[num_blocks, block_size, Hkv, D]``.
        v_cache: Same shape as ``k_cache``.
        block_tables: ``[B, max_blocks]``.
        cu_seqlens_q: ``[B + 1]`` query offsets.
        seq_lens: ``[B]`` total key positions (cached + new) per sequence.
        scale: Softmax scale.

    Returns:
        ``[T, Hq, D]`` float64 on CPU.
    """
    import torch

    q64 = query.to(device="cpu", dtype=torch.float64)
    cu = cu_seqlens_q.tolist()
    outs = []
    for i, n in enumerate(seq_lens.tolist()):
        ql = cu[i + 1] - cu[i]
        k = _gather_keys(k_cache, block_tables[i], n)
        v = _gather_keys(v_cache, block_tables[i], n)
        outs.append(_attend(q64[cu[i] : cu[i + 1]], k, v, torch.arange(n - ql, n), scale))
    return torch.cat(outs, 0)
