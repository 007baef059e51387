"""Paged-attention ops in plain torch (any device): KV store, batched decode, causal prefill over pages.

The op interface (shared with ``paged_triton``) is described in :mod:`sagellm_backend.attention.testing`.
Inputs are validated by the backend: caches ``[num_blocks, block_size, Hkv, D]`` with the inner three dims
contiguous (``stride(0)`` arbitrary), one dtype for query and caches, index tensors int32/int64.

Pages are read through a 2-D ``[num_blocks, block_size*Hkv*D]`` strided view of the cache, so one
``index_select`` gathers the pages of a group of sequences into a ``[B, L, Hkv, D]`` tensor; the score and
value products run as one batched matmul per KV head directly on that layout (rows ``Hkv*D`` apart), with no
further copy and no repeat of KV heads; softmax is in fp32 (fp64 for fp64 inputs).

On CPU the work is cut so the gathered pages stay in cache between the gather and the products (decode:
groups of sequences of about :data:`CPU_GROUP_BYTES`; prefill: query chunks whose scores stay near
:data:`SCORE_BYTES`), and gathers land in per-thread workspaces that are reused across calls: fresh
multi-megabyte buffers would cost a page fault per 4 KiB on every call.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import torch

from .kv_quant import quantize
from .variants import paged_options

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .variants import PagedOptions

__all__ = ["CPU_GROUP_BYTES", "SCORE_BYTES", "WORKSPACE_MAX_BYTES", "decode_groups", "paged_decode", "paged_prefill",
           "store_kv"]  # fmt: skip

#: Target bytes of gathered K+V per decode group on CPU (cache-resident between gather and products).
CPU_GROUP_BYTES = 8 << 20
#: Target bytes of one prefill chunk's fp32 scores.
SCORE_BYTES = 16 << 20
#: Largest workspace kept per thread and purpose; bigger gathers allocate (and free) their own buffer.
WORKSPACE_MAX_BYTES = 32 << 20

_LOCAL = threading.local()


def _workspace(purpose: str, numel: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor | None:
    """A reused CPU buffer of ``numel`` elements for ``purpose`` (this thread's), or None (GPU, or too big)."""
    if device.type != "cpu" or numel * dtype.itemsize > WORKSPACE_MAX_BYTES:
        return None
    bufs: dict[tuple[str, torch.dtype], torch.Tensor] = _LOCAL.__dict__.setdefault("bufs", {})
    buf = bufs.get((purpose, dtype))
    if buf is None or buf.numel() < numel:
        with torch.inference_mode(False):  # a normal tensor: later calls outside inference mode may write it too
            buf = bufs[(purpose, dtype)] = torch.empty(numel, dtype=dtype)
    return buf[:numel]


def _pages(cache: torch.Tensor) -> torch.Tensor | None:
    """``[num_blocks, block_size*Hkv*D]`` view of a cache whose inner three dims are contiguous (token-major pages),
    else None."""
    n, bs, h, d = cache.shape
    if cache.stride()[1:] != (h * d, d, 1):
        return None
    return cache.as_strided((n, bs * h * d), (cache.stride(0), 1), cache.storage_offset())


def _gather(
    cache: torch.Tensor, table: torch.Tensor, compute: torch.dtype, purpose: str, scale: torch.Tensor | None = None
) -> torch.Tensor:
    """Pages of ``table [B, nb]`` (entries clamped into range) as ``[B, nb*block_size, Hkv, D]`` in ``compute``,
    times ``scale`` (1 or ``Hkv`` elements: an fp8 cache's dequantisation) when given.

    The result may be a workspace reused by the next gather of the same ``purpose`` on this thread.
    """
    n, bs, h, d = cache.shape
    b, nb = table.shape
    ids = table.reshape(-1).clamp(0, n - 1)
    pages = _pages(cache)
    shape: tuple[int, ...] = (b * nb, bs * h * d)
    if pages is None:  # other page layouts (head-major): gathered page by page into [bs, Hkv, D] order
        pages, shape = cache, (b * nb, bs, h, d)
    ws = _workspace(purpose, b * nb * bs * h * d, cache.dtype, cache.device)
    out = pages.index_select(0, ids) if ws is None else torch.index_select(pages, 0, ids, out=ws.view(shape))
    out = out.reshape(b, nb * bs, h, d)
    if out.dtype == compute and scale is None:
        return out
    wide = _workspace(purpose + "/compute", out.numel(), compute, cache.device)
    out = out.to(compute) if wide is None else wide.view(out.shape).copy_(out)
    return out if scale is None else out.mul_(scale.to(compute).view(1, 1, -1, 1))


def _softmax_(scores: torch.Tensor) -> torch.Tensor:
    """In-place softmax over the last dim (rows have at least one finite entry)."""
    scores.sub_(scores.amax(dim=-1, keepdim=True)).exp_()
    return scores.div_(scores.sum(dim=-1, keepdim=True))


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def store_kv(
    key: torch.Tensor, value: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor,
    *, k_scale: torch.Tensor | None = None, v_scale: torch.Tensor | None = None,
) -> None:  # fmt: skip
    """Write ``key[i]``/``value[i]`` at flat slot ``slot_mapping[i]`` of the caches; negative slots are skipped.

    Args:
        key: ``[T, Hkv, D]``.
        value: ``[T, Hkv, D]``.
        k_cache: ``[num_blocks, block_size, Hkv, D]``.
        v_cache: Same shape as ``k_cache``.
        slot_mapping: ``[T]`` int; slot ``s`` is block ``s // block_size``, offset ``s % block_size``.
        k_scale: For an fp8 cache: 1 or ``Hkv`` float32 scales; keys are stored quantised
            (:func:`~sagellm_backend.attention.kv_quant.quantize`).
        v_scale: Same for values.
    """
    if k_scale is not None and v_scale is not None:
        key, value = quantize(key, k_scale, k_cache.dtype), quantize(value, v_scale, v_cache.dtype)
    bs = k_cache.shape[1]
    slots = slot_mapping.to(torch.int64)
    valid = slots >= 0
    if not bool(valid.all()):
        slots, key, value = slots[valid], key[valid], value[valid]
    blk, off = slots // bs, slots % bs
    k_cache.index_put_((blk, off), key)
    v_cache.index_put_((blk, off), value)


def _attend_pages(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_pos: torch.Tensor,
    k_pos: torch.Tensor,
    scale: float,
    window: int | None,
    soft_cap: float | None,
    slopes: torch.Tensor | None,
) -> torch.Tensor:
    """Attention per batch entry: ``q [B, Hq, M, D]`` at positions ``q_pos [B|1, M]`` over ``k, v [B, L, Hkv, D]``
    at positions ``k_pos [L]``; a key is visible when at or before the query (and within ``window``). The
    variants are those of :mod:`.reference`.

    Returns ``[B, Hq, M, D]`` in ``q``'s dtype (the compute dtype). One bmm per KV head on the strided layout.
    """
    b, hq, m, d = q.shape
    hkv = k.shape[2]
    g = hq // hkv
    rel = k_pos[None, None, :] - q_pos[:, :, None]  # [B|1, M, L]
    mask = rel <= 0
    if window is not None:
        mask &= rel > -window
    scores = torch.empty(hkv, b, g * m, k.shape[1], dtype=q.dtype, device=q.device)
    qh = (q * scale).reshape(b, hkv, g * m, d)
    for h in range(hkv):
        torch.bmm(qh[:, h], k[:, :, h].transpose(1, 2), out=scores[h])
    scores = scores.view(hkv, b, g, m, -1)
    if soft_cap is not None:
        scores.div_(soft_cap).tanh_().mul_(soft_cap)
    if slopes is not None:
        scores.add_(slopes.to(q.dtype).view(hkv, 1, g, 1, 1) * rel[None, :, None].to(q.dtype))
    scores.masked_fill_(~mask[None, :, None], float("-inf"))
    probs = _softmax_(scores).view(hkv, b, g * m, -1)
    # Pages past a sequence's end hold whatever the pool's memory held (NaN/inf bit patterns too):
    # a zero weight times NaN is NaN, so those rows of the gathered V (a private copy) are zeroed.
    v.masked_fill_(~mask.any(dim=1)[:, :, None, None], 0)
    out = torch.empty(b, hkv, g * m, d, dtype=q.dtype, device=q.device)
    for h in range(hkv):
        out[:, h] = torch.bmm(probs[h], v[:, :, h])
    return out.view(b, hq, m, d)


def paged_decode(
    query: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
    seq_lens: torch.Tensor, scale: float, out: torch.Tensor | None = None, **options: Unpack[PagedOptions],
) -> torch.Tensor:  # fmt: skip
    """One query token per sequence attending to its first ``seq_lens[i]`` cached positions.

    Args:
        query: ``[B, Hq, D]``.
        k_cache: ``[num_blocks, block_size, Hkv, D]``.
        v_cache: Same shape as ``k_cache``.
        block_tables: ``[B, max_blocks]`` int.
        seq_lens: ``[B]`` int, each >= 1.
        scale: Softmax scale.
        out: Optional ``[B, Hq, D]`` result buffer.
        **options: :class:`~.variants.PagedOptions`; with a window only the window's pages are read.

    Returns:
        ``[B, Hq, D]`` in the query's dtype (``out`` when given).

    Raises:
        InvalidArgumentTypeError: An option :class:`~.variants.PagedOptions` does not name.
    """
    variants = paged_options("paged_decode", options)
    sliding_window = variants[0]
    bs = k_cache.shape[1]
    lens = seq_lens.to(device=query.device, dtype=torch.int64)
    host_lens = lens.tolist()
    need = [(n + bs - 1) // bs for n in host_lens]
    skip = [0] * len(need) if sliding_window is None else [max(0, n - sliding_window) // bs for n in host_lens]
    res = out if out is not None else torch.empty_like(query)
    page_bytes = 2 * bs * k_cache.shape[2] * k_cache.shape[3] * _compute_dtype(query.dtype).itemsize
    for ids, _ in decode_groups([n - f for n, f in zip(need, skip)], page_bytes, query.device.type == "cpu"):
        rows = range(len(need))[ids] if isinstance(ids, slice) else ids
        first = min(skip[i] for i in rows)
        last = max(need[i] for i in rows)
        if isinstance(ids, slice):
            q, table, ln = query[ids], block_tables[ids], lens[ids]
        else:
            idx = torch.tensor(ids, dtype=torch.int64, device=query.device)
            q, table, ln = query.index_select(0, idx), block_tables.index_select(0, idx), lens.index_select(0, idx)
        part = _decode_group(q, k_cache, v_cache, table, ln, first, last, scale, *variants)
        if isinstance(ids, slice):
            res[ids] = part
        else:
            res.index_copy_(0, idx, part.to(res.dtype))
    return res


def decode_groups(need: list[int], page_bytes: int, on_cpu: bool) -> list[tuple[slice | list[int], int]]:
    """Split a decode batch into groups, each padded to its own longest sequence (``nb`` pages).

    Sequences whose page counts differ widely (padding would more than double the work) are bucketed by
    power-of-two page counts. On CPU each group's gathered K+V is also kept near :data:`CPU_GROUP_BYTES`,
    so it stays in cache between the gather and the two products instead of streaming through memory.

    Args:
        need: Pages per sequence.
        page_bytes: Bytes one page of K plus V takes in the compute dtype.
        on_cpu: Whether to cap group sizes.

    Returns:
        ``(rows, nb)`` pairs; ``rows`` is a slice when the group is a contiguous run of sequences.
    """
    if not need:
        return []
    if len(need) * max(need) <= 2 * sum(need):
        buckets = [list(range(len(need)))]
    else:
        by_size: dict[int, list[int]] = {}
        for i, n in enumerate(need):
            by_size.setdefault(max(n - 1, 0).bit_length(), []).append(i)
        buckets = list(by_size.values())
    groups: list[tuple[slice | list[int], int]] = []
    for ids in buckets:
        nb = max(need[i] for i in ids)
        size = max(1, CPU_GROUP_BYTES // max(1, nb * page_bytes)) if on_cpu else len(ids)
        for s in range(0, len(ids), size):
            part = ids[s : s + size]
            contiguous = part[-1] - part[0] == len(part) - 1
            rows: slice | list[int] = slice(part[0], part[-1] + 1) if contiguous else part
            groups.append((rows, max(need[i] for i in part)))
    return groups


def _decode_group(
    query: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    lens: torch.Tensor,
    first: int,
    last: int,
    scale: float,
    window: int | None,
    soft_cap: float | None,
    slopes: torch.Tensor | None,
    k_scale: torch.Tensor | None,
    v_scale: torch.Tensor | None,
) -> torch.Tensor:
    """Decode of one batch over pages ``first .. last - 1`` of each table row; ``[B, Hq, D]`` in the compute dtype."""
    b, hq, d = query.shape
    bs = k_cache.shape[1]
    table = block_tables[:, first:last].to(torch.int64)
    cdt = _compute_dtype(query.dtype)
    k = _gather(k_cache, table, cdt, "k", k_scale)
    v = _gather(v_cache, table, cdt, "v", v_scale)
    k_pos = torch.arange(first * bs, last * bs, device=query.device)
    q_pos = (lens - 1)[:, None]
    return _attend_pages(query.to(cdt).view(b, hq, 1, d), k, v, q_pos, k_pos, scale, window, soft_cap, slopes).view(
        b, hq, d
    )


def paged_prefill(
    query: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
    cu_seqlens_q: torch.Tensor, seq_lens: torch.Tensor, scale: float, out: torch.Tensor | None = None,
    **options: Unpack[PagedOptions],
) -> torch.Tensor:  # fmt: skip
    """Causal attention of packed new tokens over their sequences' pages (cached context + themselves).

    Query ``j`` of sequence ``i`` sits at position ``seq_lens[i] - q_len_i + j`` and sees keys up to it.

    Args:
        query: ``[T, Hq, D]`` packed by sequence.
        k_cache: As :func:`paged_decode` (the new tokens' K/V already stored).
        v_cache: As :func:`paged_decode`.
        block_tables: As :func:`paged_decode`.
        cu_seqlens_q: ``[B + 1]`` int query offsets.
        seq_lens: ``[B]`` int total key positions per sequence.
        scale: As :func:`paged_decode`.
        out: Optional ``[T, Hq, D]`` result buffer.
        **options: As :func:`paged_decode`; with a window only the windows' pages are read.

    Returns:
        ``[T, Hq, D]`` in the query's dtype (``out`` when given).

    Raises:
        InvalidArgumentTypeError: As :func:`paged_decode`.
    """
    sliding_window, logits_soft_cap, alibi_slopes, k_scale, v_scale = paged_options("paged_prefill", options)
    bs = k_cache.shape[1]
    res = out if out is not None else torch.empty_like(query)
    cdt = _compute_dtype(query.dtype)
    cu = cu_seqlens_q.tolist()
    lens = seq_lens.tolist()
    table = block_tables.to(torch.int64)
    for i, n in enumerate(lens):
        s, e = cu[i], cu[i + 1]
        rows = max(1, SCORE_BYTES // max(1, 4 * query.shape[1] * n))
        for a in range(s, e, rows):
            z = min(e, a + rows)
            last = n - (e - z)  # key positions visible to this chunk's last query
            nb = (last + bs - 1) // bs
            first = 0 if sliding_window is None else max(0, last - (z - a) - sliding_window + 1) // bs
            k = _gather(k_cache, table[i : i + 1, first:nb], cdt, "k", k_scale)
            v = _gather(v_cache, table[i : i + 1, first:nb], cdt, "v", v_scale)
            q_pos = torch.arange(last - (z - a), last, device=query.device)
            k_pos = torch.arange(first * bs, nb * bs, device=query.device)
            q = query[a:z].to(cdt).transpose(0, 1).unsqueeze(0)  # [1, Hq, M, D]
            att = _attend_pages(q, k, v, q_pos[None], k_pos, scale, sliding_window, logits_soft_cap, alibi_slopes)
            res[a:z] = att[0].transpose(0, 1)
    return res
