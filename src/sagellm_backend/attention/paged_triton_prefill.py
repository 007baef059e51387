"""Paged prefill attention in Triton: flash-attention tiles over packed queries x paged keys.

Each program owns one KV head and ``BLOCK_Q`` consecutive new queries of one sequence; its
``BLOCK_M = BLOCK_Q x GP`` rows are those queries times the (padded) query heads of the KV head,
so every K/V tile it gathers through the block table serves all of them. Key tiles that every row
sees in full run without masks; only the tiles on the causal diagonal (and the sequence's last
tile) are masked, and tiles past the last row's position are never loaded.

Programs map to (sequence, query tile) without reading lengths on the host: sequence ``i``'s tiles
are numbered from ``cu_seqlens_q[i] // BLOCK_Q + i``, which leaves room for ``ceil(q_len /
BLOCK_Q)`` tiles, so ``T // BLOCK_Q + B`` programs per KV head cover every batch; a binary search
over ``cu_seqlens_q`` finds a program's sequence and programs in the gaps store nothing. Tiles
are launched last-first so the longest (latest) query tiles start early.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import triton
import triton.language as tl

from .triton_args import dot_mode, fp8_args, launch_dims, pad_dim, variant_args
from .triton_tiles import LOG2E, attend_span, fresh_state, head_factors
from .variants import paged_options

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .variants import PagedOptions

__all__ = ["PrefillConfig", "paged_prefill", "paged_prefill_with", "prefill_config"]


# fmt: off
@triton.jit
def _prefill_kernel(  # type: ignore[no-untyped-def]  # a Triton JIT kernel: untyped pointers and constexprs
    q_ptr, kc_ptr, vc_ptr, bt_ptr, sl_ptr, cu_ptr, out_ptr, sq_t, sq_h, sq_d, so_t, so_h, so_d, sbt_b, skb,
    skt, skh, svb, svt, svh, qk_scale, num_seqs, G: tl.constexpr, GP: tl.constexpr, D: tl.constexpr,
    DP: tl.constexpr, BS: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_N: tl.constexpr, PREC: tl.constexpr,
    DOT_F32: tl.constexpr, window, softcap2, slopes_ptr, WINDOW: tl.constexpr, SOFTCAP: tl.constexpr,
    ALIBI: tl.constexpr, ks_ptr, vs_ptr, ks_stride, vs_stride, KV_FP8: tl.constexpr,
):
    # fmt: on
    tile = tl.num_programs(0) - 1 - tl.program_id(0)
    kvh = tl.program_id(1)
    # Last sequence i with cu[i] // BLOCK_Q + i <= tile.
    lo = tl.program_id(1) * 0
    hi = lo + num_seqs
    while lo < hi:
        mid = (lo + hi) // 2
        first = tl.load(cu_ptr + mid).to(tl.int32) // BLOCK_Q + mid
        lo = tl.where(first <= tile, mid + 1, lo)
        hi = tl.where(first <= tile, hi, mid)
    seq = lo - 1
    q_start = tl.load(cu_ptr + seq).to(tl.int32)
    q_len = tl.load(cu_ptr + seq + 1).to(tl.int32) - q_start
    j0 = (tile - (q_start // BLOCK_Q + seq)) * BLOCK_Q
    seq_len = tl.load(sl_ptr + seq).to(tl.int32)
    ctx = seq_len - q_len

    BLOCK_M: tl.constexpr = BLOCK_Q * GP
    rows = tl.arange(0, BLOCK_M)
    qi = j0 + rows // GP
    g = rows % GP
    rmask = (qi < q_len) & (g < G)
    heads = kvh * G + g
    offs_d = tl.arange(0, DP)
    dmask = offs_d < D
    qmask = rmask[:, None] & dmask[None, :]
    tok = (q_start + qi).to(tl.int64)
    q = tl.load(q_ptr + (tok * sq_t + heads * sq_h)[:, None] + offs_d[None, :] * sq_d, mask=qmask, other=0.0)
    if DOT_F32:
        q = q.to(tl.float32)
    q_pos = ctx + qi

    # Keys < ctx + j0 + 1 are visible to every row; the last valid row sees keys < kv_hi.
    live = j0 < q_len
    kv_hi = tl.where(live, ctx + tl.minimum(j0 + BLOCK_Q, q_len), 0)
    full_hi = tl.where(live, ((ctx + j0 + 1) // BLOCK_N) * BLOCK_N, 0)
    if WINDOW:
        # Windows start at the first row's first key (rounded down to a tile); the tiles before the last
        # valid row's first key are masked.
        kv_lo = (tl.maximum(ctx + j0 - window + 1, 0) // BLOCK_N) * BLOCK_N
        edge_hi = tl.cdiv(tl.maximum(kv_hi - window, 0), BLOCK_N) * BLOCK_N
    else:
        kv_lo = kv_hi * 0
        edge_hi = kv_lo
    slopes2, ks, vs = head_factors(slopes_ptr, heads, g < G, ks_ptr, vs_ptr, kvh, ks_stride, vs_stride, ALIBI, KV_FP8)

    acc, m_i, l_i = fresh_state(BLOCK_M, DP)
    acc, _, l_i = attend_span(
        acc, m_i, l_i, q, kc_ptr + kvh.to(tl.int64) * skh, vc_ptr + kvh.to(tl.int64) * svh,
        bt_ptr + seq.to(tl.int64) * sbt_b, skb, skt, svb, svt, kv_lo, full_hi, kv_hi, seq_len, q_pos, qk_scale * ks,
        offs_d, dmask, BLOCK_M, DP, BS, BLOCK_N, True, PREC, DOT_F32, edge_hi, window, softcap2, slopes2, WINDOW,
        SOFTCAP, ALIBI, vs, KV_FP8,
    )  # fmt: skip
    o = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
    o_ptr = out_ptr + (tok * so_t + heads * so_h)[:, None] + offs_d[None, :] * so_d
    tl.store(o_ptr, o.to(out_ptr.dtype.element_ty), mask=qmask)


@dataclass(frozen=True)
class PrefillConfig:
    """Prefill launch parameters.

    Attributes:
        block_m: Rows per program (queries x padded query heads of one KV head).
        block_n: Key tokens per tile.
        num_warps: Warps per program.
        num_stages: Software-pipeline depth of the tile loop.
    """

    block_m: int = 128
    block_n: int = 64
    num_warps: int = 8
    num_stages: int = 3


def prefill_config(head_dim: int, dtype: torch.dtype) -> PrefillConfig:
    """Default prefill configuration (the query-head group size does not change it: ``block_m`` rows hold
    ``block_m // GP`` queries).

    Args:
        head_dim: D.
        dtype: Query/cache dtype.

    Returns:
        The configuration.
    """
    dp = pad_dim(head_dim)
    if dtype == torch.float32:
        return PrefillConfig(64 if dp <= 128 else 32, 32, 4, 2)
    if dp <= 128:
        return PrefillConfig(64, 64, 4, 3)
    return PrefillConfig(64, 64, 8, 2)


def paged_prefill(
    query: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
    cu_seqlens_q: torch.Tensor, seq_lens: torch.Tensor, scale: float, out: torch.Tensor | None = None, *,
    cfg: PrefillConfig | None = None, **options: Unpack[PagedOptions],
) -> torch.Tensor:  # fmt: skip
    """Causal attention of packed new queries to their sequences' paged keys.

    New query ``j`` of sequence ``i`` sits at position ``seq_lens[i] - q_len_i + j`` and attends to
    key positions ``0 ..`` that position, all read from the pages (new K/V stored first).

    Args:
        query: ``[T, Hq, D]`` packed by sequence.
        k_cache: ``[num_blocks, block_size, Hkv, D]``.
        v_cache: Same shape as ``k_cache``.
        block_tables: int32/int64 ``[B, max_blocks]``.
        cu_seqlens_q: ``[B + 1]`` query offsets.
        seq_lens: ``[B]`` total key positions (cached + new) per sequence.
        scale: Softmax scale (> 0).
        out: Optional ``[T, Hq, D]`` output in the query's dtype.
        cfg: Launch configuration (tuning and tests; default :func:`prefill_config`).
        **options: :class:`~.variants.PagedOptions`; with a window the tiles before a query tile's windows are
            not read.

    Returns:
        ``[T, Hq, D]`` in the query's dtype.

    Raises:
        InvalidArgumentError: ``scale`` is not positive.
        InvalidArgumentTypeError: An option :class:`~.variants.PagedOptions` does not name.
    """
    sliding_window, logits_soft_cap, alibi_slopes, k_scale, v_scale = paged_options("paged_prefill", options)
    t, _, d, bs, hkv, g = launch_dims("paged_prefill", query, k_cache, scale)
    cfg = cfg or prefill_config(d, query.dtype)
    gp = pad_dim(g, 1)
    block_q = max(1, cfg.block_m // gp)
    if block_q * gp < 16:  # tl.dot needs at least 16 rows
        block_q = 16 // gp
    if out is None:
        out = torch.empty_like(query, memory_format=torch.contiguous_format)
    n_seqs = cu_seqlens_q.shape[0] - 1
    prec, dot_f32 = dot_mode(query.dtype)
    if t == 0 or n_seqs == 0:
        return out
    _prefill_kernel[(t // block_q + n_seqs, hkv)](
        query, k_cache, v_cache, block_tables, seq_lens, cu_seqlens_q, out,
        query.stride(0), query.stride(1), query.stride(2), out.stride(0), out.stride(1), out.stride(2),
        block_tables.stride(0), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), scale * LOG2E, n_seqs,
        G=g, GP=gp, D=d, DP=pad_dim(d), BS=bs, BLOCK_Q=block_q, BLOCK_N=cfg.block_n,
        PREC=prec, DOT_F32=dot_f32, num_warps=cfg.num_warps, num_stages=cfg.num_stages,
        **variant_args(query, sliding_window, logits_soft_cap, alibi_slopes), **fp8_args(query, k_scale, v_scale),
    )  # fmt: skip
    return out


#: :func:`paged_prefill`, by the name the tuning scripts call it with an explicit ``cfg``.
paged_prefill_with = paged_prefill
