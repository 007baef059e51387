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

from ..errors import InvalidArgumentTypeError

if TYPE_CHECKING:
    import torch
    from typing_extensions import Unpack

    from .variants import PagedOptions

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


def _positions(cache: torch.Tensor, table_row: torch.Tensor, length: int, scale: torch.Tensor | None) -> torch.Tensor:
    """Float64 CPU ``[length, Hkv, D]``: key (or value) position ``j`` of one sequence read token by token from
    row ``j % block_size`` of block ``table_row[j // block_size]``, times ``scale`` (1 or ``Hkv`` elements: an fp8
    cache's dequantisation) when given."""
    import torch

    j = torch.arange(length)
    blocks = table_row.to(device="cpu", dtype=torch.int64)[j // cache.shape[1]]
    rows = cache[blocks.to(cache.device), (j % cache.shape[1]).to(cache.device)].to(device="cpu", dtype=torch.float64)
    return rows if scale is None else rows * scale.to(device="cpu", dtype=torch.float64).reshape(1, -1, 1)


def _sequence(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, options: PagedOptions) -> torch.Tensor:
    """Float64 attention of one sequence's last ``n`` positions ``q [n, Hq, D]`` over all ``L`` of its positions
    ``k, v [L, Hkv, D]``: one dense ``[Hq, n, L]`` score matrix, the rules of the module doc applied to it as a
    bias and as a mask (a band of the matrix: row ``r`` is position ``p = L - n + r``)."""
    import torch

    n, hq, _ = q.shape
    total = k.shape[0]
    heads = torch.arange(hq) // (hq // k.shape[1])  # query head h reads KV head h // group
    scores = torch.einsum("rhd,jhd->hrj", q, k[:, heads]) * scale
    cap = options.get("logits_soft_cap")
    if cap is not None:
        scores = cap * torch.tanh(scores / cap)
    slopes = options.get("alibi_slopes")
    if slopes is not None:
        distance = torch.arange(total)[None, :] - torch.arange(total - n, total)[:, None]  # [r, j] = j - p
        scores = scores + slopes.to(device="cpu", dtype=torch.float64)[:, None, None] * distance
    visible = torch.ones(n, total, dtype=torch.bool).tril(total - n)  # j <= p
    window = options.get("sliding_window")
    if window is not None:
        visible = visible.triu(total - n - window + 1)  # p - j < window
    probs = torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1)
    return torch.einsum("hrj,jhd->rhd", probs, v[:, heads])


def reference_paged_decode(
    query: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
    seq_lens: torch.Tensor, scale: float, **options: Unpack[PagedOptions],
) -> torch.Tensor:  # fmt: skip
    """Float64 CPU reference of ``paged_decode``: the prefill of one new query per sequence, at position
    ``seq_lens[i] - 1`` (:func:`reference_paged_prefill`, same arguments but the query offsets).

    Returns:
        ``[B, Hq, D]`` float64 on CPU.
    """
    import torch

    one_each = torch.arange(query.shape[0] + 1)
    return reference_paged_prefill(query, k_cache, v_cache, block_tables, one_each, seq_lens, scale, **options)


def reference_paged_prefill(
    query: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
    cu_seqlens_q: torch.Tensor, seq_lens: torch.Tensor, scale: float, **options: Unpack[PagedOptions],
) -> torch.Tensor:  # fmt: skip
    """Float64 CPU reference of ``paged_prefill`` (causal, with cached context, all keys read from the pages).

    Args:
        query: ``[T, Hq, D]`` packed.
        k_cache: ``[num_blocks, block_size, Hkv, D]``.
        v_cache: Same shape as ``k_cache``.
        block_tables: ``[B, max_blocks]``.
        cu_seqlens_q: ``[B + 1]`` query offsets.
        seq_lens: ``[B]`` total key positions (cached + new) per sequence.
        scale: Softmax scale.
        **options: The variants of the module doc and the fp8 scales (:class:`~.variants.PagedOptions`).

    Returns:
        ``[T, Hq, D]`` float64 on CPU.

    Raises:
        InvalidArgumentTypeError: An option that :class:`~.variants.PagedOptions` does not name.
    """
    import torch

    unknown = options.keys() - {"sliding_window", "logits_soft_cap", "alibi_slopes", "k_scale", "v_scale"}
    if unknown:
        raise InvalidArgumentTypeError(f"the reference takes no option {sorted(unknown)}; see PagedOptions.")
    q64 = query.to(device="cpu", dtype=torch.float64)
    cu = cu_seqlens_q.tolist()
    outs = []
    for i, n in enumerate(seq_lens.tolist()):
        k = _positions(k_cache, block_tables[i], n, options.get("k_scale"))
        v = _positions(v_cache, block_tables[i], n, options.get("v_scale"))
        outs.append(_sequence(q64[cu[i] : cu[i + 1]], k, v, scale, options))
    return torch.cat(outs, 0)
