"""Paged-attention ops in plain torch (any device): KV store, batched decode, causal prefill over pages.

The op interface (shared with ``paged_triton``) is described in :mod:`sagellm_backend.attention.testing`.
Inputs are validated by the backend: caches ``[num_blocks, block_size, Hkv, D]`` with the inner three dims
contiguous (``stride(0)`` arbitrary), one dtype for query and caches, index tensors int32/int64.

Pages are read through a 2-D ``[num_blocks, block_size*Hkv*D]`` strided view of the cache, so one
``index_select`` gathers every page of the batch into a ``[B, L, Hkv, D]`` tensor; the score and value
products then run as one batched matmul per KV head directly on that layout (rows ``Hkv*D`` apart), with
no further copy, no repeat of KV heads and softmax in fp32.
"""

from __future__ import annotations

import torch

__all__ = ["paged_decode", "paged_prefill", "store_kv"]


def _pages(cache: torch.Tensor) -> torch.Tensor:
    """``[num_blocks, block_size*Hkv*D]`` view of a cache whose inner three dims are contiguous."""
    n, bs, h, d = cache.shape
    return cache.as_strided((n, bs * h * d), (cache.stride(0), 1), cache.storage_offset())


def _gather(cache: torch.Tensor, table: torch.Tensor, compute: torch.dtype) -> torch.Tensor:
    """Pages of ``table [B, nb]`` (entries clamped into range) as ``[B, nb*block_size, Hkv, D]`` in ``compute``."""
    n, bs, h, d = cache.shape
    b, nb = table.shape
    ids = table.reshape(-1).clamp(0, n - 1)
    out = _pages(cache).index_select(0, ids).view(b, nb * bs, h, d)
    return out if out.dtype == compute else out.to(compute)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def store_kv(
    key: torch.Tensor, value: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor
) -> None:
    """Write ``key[i]``/``value[i]`` at flat slot ``slot_mapping[i]`` of the caches; negative slots are skipped.

    Args:
        key: ``[T, Hkv, D]``.
        value: ``[T, Hkv, D]``.
        k_cache: ``[num_blocks, block_size, Hkv, D]``.
        v_cache: Same shape as ``k_cache``.
        slot_mapping: ``[T]`` int; slot ``s`` is block ``s // block_size``, offset ``s % block_size``.
    """
    bs = k_cache.shape[1]
    slots = slot_mapping.to(torch.int64)
    valid = slots >= 0
    if not bool(valid.all()):
        slots, key, value = slots[valid], key[valid], value[valid]
    blk, off = slots // bs, slots % bs
    k_cache.index_put_((blk, off), key)
    v_cache.index_put_((blk, off), value)


def _attend_pages(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
    """Masked attention per batch entry: ``q [B, Hq, M, D]`` over ``k, v [B, L, Hkv, D]``; ``mask [B|1, M, L]``.

    Returns ``[B, Hq, M, D]`` in ``q``'s dtype (the compute dtype). One bmm per KV head on the strided layout.
    """
    b, hq, m, d = q.shape
    hkv = k.shape[2]
    g = hq // hkv
    scores = torch.empty(hkv, b, g * m, k.shape[1], dtype=q.dtype, device=q.device)
    qh = (q * scale).reshape(b, hkv, g * m, d)
    for h in range(hkv):
        torch.bmm(qh[:, h], k[:, :, h].transpose(1, 2), out=scores[h])
    scores = scores.view(hkv, b, g, m, -1).masked_fill_(~mask[None, :, None], float("-inf"))
    probs = torch.softmax(scores, dim=-1).view(hkv, b, g * m, -1)
    out = torch.empty(b, hkv, g * m, d, dtype=q.dtype, device=q.device)
    for h in range(hkv):
        out[:, h] = torch.bmm(probs[h], v[:, :, h])
    return out.view(b, hq, m, d)


def paged_decode(
    query: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """One query token per sequence attending to its first ``seq_lens[i]`` cached positions.

    Args:
        query: ``[B, Hq, D]``.
        k_cache: ``[num_blocks, block_size, Hkv, D]``.
        v_cache: Same shape as ``k_cache``.
        block_tables: ``[B, max_blocks]`` int.
        seq_lens: ``[B]`` int, each >= 1.
        scale: Softmax scale.
        out: Optional ``[B, Hq, D]`` result buffer.

    Returns:
        ``[B, Hq, D]`` in the query's dtype (``out`` when given).
    """
    bs = k_cache.shape[1]
    lens = seq_lens.to(device=query.device, dtype=torch.int64)
    need = [(n + bs - 1) // bs for n in lens.tolist()]
    res = out if out is not None else torch.empty_like(query)
    if len(need) * max(need, default=0) <= 2 * sum(need):
        res.copy_(_decode_group(query, k_cache, v_cache, block_tables, lens, max(need, default=0), scale))
        return res
    # Lengths differ widely: bucket sequences by power-of-two page counts so padding at most doubles the work.
    buckets: dict[int, list[int]] = {}
    for i, n in enumerate(need):
        buckets.setdefault(max(n - 1, 0).bit_length(), []).append(i)
    for ids in buckets.values():
        idx = torch.tensor(ids, dtype=torch.int64, device=query.device)
        part = _decode_group(
            query.index_select(0, idx), k_cache, v_cache, block_tables.index_select(0, idx),
            lens.index_select(0, idx), max(need[i] for i in ids), scale,
        )  # fmt: skip
        res.index_copy_(0, idx, part.to(res.dtype))
    return res


def _decode_group(
    query: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    lens: torch.Tensor,
    nb: int,
    scale: float,
) -> torch.Tensor:
    """Decode of one batch padded to ``nb`` pages per sequence; returns ``[B, Hq, D]`` in the compute dtype."""
    b, hq, d = query.shape
    bs = k_cache.shape[1]
    table = block_tables[:, :nb].to(torch.int64)
    cdt = _compute_dtype(query.dtype)
    k = _gather(k_cache, table, cdt)
    v = _gather(v_cache, table, cdt)
    mask = (torch.arange(nb * bs, device=query.device)[None, :] < lens[:, None])[:, None, :]
    return _attend_pages(query.to(cdt).view(b, hq, 1, d), k, v, mask, scale).view(b, hq, d)


def paged_prefill(
    query: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Causal attention of packed new tokens over their sequences' pages (cached context + themselves).

    Query ``j`` of sequence ``i`` sits at position ``seq_lens[i] - q_len_i + j`` and sees keys up to it.

    Args:
        query: ``[T, Hq, D]`` packed by sequence.
        k_cache: ``[num_blocks, block_size, Hkv, D]`` (the new tokens' K/V already stored).
        v_cache: Same shape as ``k_cache``.
        block_tables: ``[B, max_blocks]`` int.
        cu_seqlens_q: ``[B + 1]`` int query offsets.
        seq_lens: ``[B]`` int total key positions per sequence.
        scale: Softmax scale.
        out: Optional ``[T, Hq, D]`` result buffer.

    Returns:
        ``[T, Hq, D]`` in the query's dtype (``out`` when given).
    """
    bs = k_cache.shape[1]
    res = out if out is not None else torch.empty_like(query)
    cdt = _compute_dtype(query.dtype)
    cu = cu_seqlens_q.tolist()
    lens = seq_lens.tolist()
    table = block_tables.to(torch.int64)
    for i, n in enumerate(lens):
        s, e = cu[i], cu[i + 1]
        if e == s:
            continue
        nb = (n + bs - 1) // bs
        k = _gather(k_cache, table[i : i + 1, :nb], cdt)
        v = _gather(v_cache, table[i : i + 1, :nb], cdt)
        q_pos = torch.arange(n - (e - s), n, device=query.device)
        mask = (torch.arange(nb * bs, device=query.device)[None, :] <= q_pos[:, None])[None]
        q = query[s:e].to(cdt).transpose(0, 1).unsqueeze(0)  # [1, Hq, M, D]
        res[s:e] = _attend_pages(q, k, v, mask, scale)[0].transpose(0, 1)
    return res
