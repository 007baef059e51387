"""Float64 reference for paged attention, and builders of arena-backed caches and shuffled block tables.

The variants (vLLM's ``AttentionImpl`` names) are defined here, for every implementation: a query at position
``p`` and a key at position ``j <= p`` of head ``h`` score ``cap * tanh(scale * q.k / cap)`` with
``logits_soft_cap=cap`` (else ``scale * q.k``), plus ``alibi_slopes[h] * (j - p)`` with ALiBi; with
``sliding_window=W`` only keys with ``p - j < W`` are visible (the query itself and the ``W - 1`` before it).

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


def _gather_keys(
    cache: torch.Tensor, table_row: torch.Tensor, length: int, scale: torch.Tensor | None = None
) -> torch.Tensor:
    """Float64 CPU ``[length, Hkv, D]`` of one sequence's key (or value) positions ``0..length-1``, times
    ``scale`` (1 or ``Hkv`` elements: an fp8 cache's dequantisation) when given."""
    import torch

    bs = cache.shape[1]
    nb = math.ceil(length / bs)
    ids = table_row[:nb].to(device=cache.device, dtype=torch.int64)
    pages = cache.index_select(0, ids).to(device="cpu", dtype=torch.float64)
    if scale is not None:
        pages = pages * scale.to(device="cpu", dtype=torch.float64).view(1, 1, -1, 1)
    return pages.reshape(nb * bs, cache.shape[2], cache.shape[3])[:length]


def _attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_pos: torch.Tensor,
    scale: float,
    sliding_window: int | None = None,
    logits_soft_cap: float | None = None,
    alibi_slopes: torch.Tensor | None = None,
) -> torch.Tensor:
    """Float64 attention of ``q [n,Hq,D]`` over ``k,v [L,Hkv,D]``; query ``j`` sees keys ``0..q_pos[j]``
    (and the variants of the module doc)."""
    import torch

    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    scores = torch.einsum("nhd,lhd->hnl", q, k) * scale
    if logits_soft_cap is not None:
        scores = logits_soft_cap * torch.tanh(scores / logits_soft_cap)
    k_pos = torch.arange(k.shape[0])
    rel = (k_pos[None, :] - q_pos[:, None]).to(torch.float64)  # [n, L]
    if alibi_slopes is not None:
        scores = scores + alibi_slopes.to(device="cpu", dtype=torch.float64)[:, None, None] * rel[None]
    mask = rel <= 0
    if sliding_window is not None:
        mask &= rel > -sliding_window
    probs = torch.softmax(scores.masked_fill(~mask[None], float("-inf")), dim=-1)
    return torch.einsum("hnl,lhd->nhd", probs, v)


def reference_paged_decode(
    query: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float,
    *,
    sliding_window: int | None = None,
    logits_soft_cap: float | None = None,
    alibi_slopes: torch.Tensor | None = None,
    k_scale: torch.Tensor | None = None,
    v_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """Float64 CPU reference of ``paged_decode``: query ``i`` attends to key positions ``0..seq_lens[i]-1``.

    Args:
        query: ``[B, Hq, D]``.
        k_cache: ``[num_blocks, block_size, Hkv, D]``.
        v_cache: Same shape as ``k_cache``.
        block_tables: ``[B, max_blocks]``.
        seq_lens: ``[B]`` visible key positions.
        scale: Softmax scale.
        sliding_window: Keys per window (module doc), or None.
        logits_soft_cap: Soft cap of the scaled scores, or None.
        alibi_slopes: ``[Hq]`` ALiBi slopes, or None.
        k_scale: An fp8 cache's key scales (1 or ``Hkv``; keys are ``stored * k_scale``), or None.
        v_scale: Same for values.

    Returns:
        ``[B, Hq, D]`` float64 on CPU.
    """
    import torch

    one_each = torch.arange(query.shape[0] + 1)  # decode is a prefill of one new query per sequence
    return reference_paged_prefill(
        query, k_cache, v_cache, block_tables, one_each, seq_lens, scale,
        sliding_window=sliding_window, logits_soft_cap=logits_soft_cap, alibi_slopes=alibi_slopes,
        k_scale=k_scale, v_scale=v_scale,
    )  # fmt: skip


def reference_paged_prefill(
    query: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float,
    *,
    sliding_window: int | None = None,
    logits_soft_cap: float | None = None,
    alibi_slopes: torch.Tensor | None = None,
    k_scale: torch.Tensor | None = None,
    v_scale: torch.Tensor | None = None,
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
        sliding_window: Keys per window (module doc), or None.
        logits_soft_cap: Soft cap of the scaled scores, or None.
        alibi_slopes: ``[Hq]`` ALiBi slopes, or None.
        k_scale: An fp8 cache's key scales (1 or ``Hkv``; keys are ``stored * k_scale``), or None.
        v_scale: Same for values.

    Returns:
        ``[T, Hq, D]`` float64 on CPU.
    """
    import torch

    q64 = query.to(device="cpu", dtype=torch.float64)
    cu = cu_seqlens_q.tolist()
    outs = []
    for i, n in enumerate(seq_lens.tolist()):
        ql = cu[i + 1] - cu[i]
        k = _gather_keys(k_cache, block_tables[i], n, k_scale)
        v = _gather_keys(v_cache, block_tables[i], n, v_scale)
        q_pos = torch.arange(n - ql, n)
        outs.append(_attend(q64[cu[i] : cu[i + 1]], k, v, q_pos, scale, sliding_window, logits_soft_cap, alibi_slopes))
    return torch.cat(outs, 0)
