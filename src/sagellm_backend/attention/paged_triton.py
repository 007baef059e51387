"""Paged attention in Triton: K/V store into pages, decode with split-K, and the shared tile loop.

Caches are ``[num_blocks, block_size, Hkv, D]`` with the inner three dims contiguous and any
``stride(0)``; every kernel takes the strides. Token ``n`` of a sequence lives in page
``block_tables[b, n // block_size]`` at row ``n % block_size``; the tile loop gathers ``BLOCK_N``
tokens at a time through the block table, so ``BLOCK_N`` does not depend on the page size.

All query heads that share one KV head are rows of one program (padded to at least 16 rows for
``tl.dot``), so each KV page is read once per KV head. Softmax is online, in base 2, accumulated
in fp32. Decode splits each sequence's context into chunks when ``B * Hkv`` programs are too few
to fill the device; the last chunk of a (sequence, KV head) to finish merges all chunks exactly by
their log-sum-exp, in the same launch. :func:`paged_decode_store` also stores each sequence's new token
in that launch and attends to it from the key/value tensors (:class:`FusedDecodeLauncher` repeats it with
bound arguments).

Imported lazily (it imports torch and triton); runs under ``TRITON_INTERPRET=1`` on CPU tensors.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import triton
import triton.language as tl

from ..errors import InvalidArgumentError
from .triton_launch import launch

if TYPE_CHECKING:
    from .paged_workspace import DecodeWorkspace

__all__ = [
    "DecodeConfig",
    "FusedDecodeLauncher",
    "decode_config",
    "decode_kernel",
    "decode_launch_args",
    "decode_splits",
    "fp8_args",
    "paged_decode",
    "paged_decode_store",
    "paged_decode_with",
    "sm_count",
    "store_kv",
    "supports",
    "variant_args",
]

LOG2E = 1.4426950408889634


# ------------------------------------------------------------------ kernels
# fmt: off
@triton.jit
def _store_kv_kernel(  # type: ignore[no-untyped-def]  # a Triton JIT kernel: untyped pointers and constexprs
    key_ptr, value_ptr, kc_ptr, vc_ptr, slot_ptr, sk_t, sk_h, sk_d, sv_t, sv_h, sv_d, skc_b, skc_t, skc_h,
    svc_b, svc_t, svc_h, n_slots, H: tl.constexpr, D: tl.constexpr, HP: tl.constexpr, DP: tl.constexpr,
    BS: tl.constexpr, ks_ptr, vs_ptr, ks_stride, vs_stride, QUANT: tl.constexpr, LIMIT: tl.constexpr,
):
    # fmt: on
    t = tl.program_id(0).to(tl.int64)
    h = tl.arange(0, HP)[:, None]
    d = tl.arange(0, DP)[None, :]
    # The slot as an [HP, 1] tensor: the interpreter rejects masks built with a scalar comparison.
    slot = tl.load(slot_ptr + t + h * 0).to(tl.int64)
    blk = slot // BS
    off = slot % BS
    m = (h < H) & (d < D) & (slot >= 0) & (slot < n_slots)  # slots outside the cache are skipped
    k = tl.load(key_ptr + t * sk_t + h * sk_h + d * sk_d, mask=m)
    v = tl.load(value_ptr + t * sv_t + h * sv_h + d * sv_d, mask=m)
    if QUANT:  # saturating fp8: clamp(x / scale) to the format's largest finite value
        ks = tl.load(ks_ptr + h * ks_stride, mask=h < H, other=1.0)
        vs = tl.load(vs_ptr + h * vs_stride, mask=h < H, other=1.0)
        k = tl.minimum(tl.maximum(k.to(tl.float32) / ks, -LIMIT), LIMIT).to(kc_ptr.dtype.element_ty)
        v = tl.minimum(tl.maximum(v.to(tl.float32) / vs, -LIMIT), LIMIT).to(vc_ptr.dtype.element_ty)
    tl.store(kc_ptr + blk * skc_b + off * skc_t + h * skc_h + d, k, mask=m)
    tl.store(vc_ptr + blk * svc_b + off * svc_t + h * svc_h + d, v, mask=m)


@triton.jit
def _tanh(x):  # type: ignore[no-untyped-def]  # a Triton JIT function
    """``tanh`` from one ``exp2`` (saturates to +-1 without overflow to NaN)."""
    return 1.0 - 2.0 / (tl.exp2(x * 2.8853900817779268) + 1.0)


# fmt: off
@triton.jit
def attend_tiles(  # type: ignore[no-untyped-def]  # a Triton JIT kernel: untyped pointers and constexprs
    acc, m_i, l_i, q, k_base, v_base, bt_row, skb, skt, svb, svt, lo, hi, seq_len, q_pos, qk_scale, offs_d,
    dmask, BS: tl.constexpr, BLOCK_N: tl.constexpr, MASK: tl.constexpr, CAUSAL: tl.constexpr,
    PREC: tl.constexpr, DOT_F32: tl.constexpr, window, softcap2, slopes2, WINDOW: tl.constexpr,
    SOFTCAP: tl.constexpr, ALIBI: tl.constexpr, KV_FP8: tl.constexpr,
):
    # fmt: on
    """Online-softmax update of ``(acc, m_i, l_i)`` with key tokens ``lo .. hi`` (step ``BLOCK_N``).

    ``MASK`` masks tokens ``>= seq_len`` (and, with ``CAUSAL``, tokens after each row's
    ``q_pos``; with ``WINDOW``, tokens ``window`` or more before it); without it every token of every
    tile must be visible to every row. ``DOT_F32`` (with ``q`` already fp32) runs both dots in fp32.
    The variants work in base 2: ``softcap2`` is the cap times log2(e), ``slopes2`` the rows' ALiBi
    slopes times log2(e). With ``WINDOW`` a row may see no key of a tile while its state is empty.
    ``KV_FP8``: the caches hold fp8, converted to the query's dtype in registers (the callers fold the
    scales into ``qk_scale`` and the final accumulator).
    """
    for start in range(lo, hi, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        if MASK:
            in_seq = offs_n < seq_len
            page = tl.load(bt_row + offs_n // BS, mask=in_seq, other=0).to(tl.int64)
            ld_mask = in_seq[:, None] & dmask[None, :]
        else:
            page = tl.load(bt_row + offs_n // BS).to(tl.int64)
            ld_mask = dmask[None, :]
        tok = offs_n % BS
        k = tl.load(k_base + (page * skb + tok * skt)[:, None] + offs_d[None, :], mask=ld_mask, other=0.0)
        if KV_FP8:
            k = k.to(q.dtype)
        if DOT_F32:
            k = k.to(tl.float32)
        s = tl.dot(q, tl.trans(k), input_precision=PREC)
        if SOFTCAP or ALIBI:
            s = s * qk_scale
            if SOFTCAP:
                s = softcap2 * _tanh(s / softcap2)
            if ALIBI:
                s = s + slopes2[:, None] * (offs_n[None, :] - q_pos[:, None]).to(tl.float32)
            s_scale = 1.0
        else:
            s_scale = qk_scale
        if MASK:
            valid = in_seq[None, :]
            if CAUSAL:
                valid = valid & (offs_n[None, :] <= q_pos[:, None])
            if WINDOW:
                valid = valid & (offs_n[None, :] > q_pos[:, None] - window)
            s = tl.where(valid, s, float("-inf"))
        # s_scale > 0, so the scaled row max is the row max scaled; one FMA per score below.
        m_new = tl.maximum(m_i, tl.max(s, 1) * s_scale)
        # A row that has seen no key yet keeps m = -inf; it subtracts 0 instead (no NaN).
        if WINDOW:  # noqa: SIM108  # a constexpr branch: only one side is compiled
            m_sub = tl.where(m_new == float("-inf"), 0.0, m_new)
        else:
            m_sub = m_new
        alpha = tl.exp2(m_i - m_sub)
        p = tl.exp2(s * s_scale - m_sub[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_base + (page * svb + tok * svt)[:, None] + offs_d[None, :], mask=ld_mask, other=0.0)
        if KV_FP8:
            v = v.to(q.dtype)
        if DOT_F32:
            v = v.to(tl.float32)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=PREC)
        m_i = m_new
    return acc, m_i, l_i


# fmt: off
@triton.jit
def attend_span(  # type: ignore[no-untyped-def]  # a Triton JIT kernel: untyped pointers and constexprs
    q, k_base, v_base, bt_row, skb, skt, svb, svt, lo, full_hi, hi, seq_len, q_pos, qk_scale, offs_d, dmask,
    ROWS: tl.constexpr, DP: tl.constexpr, BS: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr,
    PREC: tl.constexpr, DOT_F32: tl.constexpr, edge_hi, window, softcap2, slopes2, WINDOW: tl.constexpr,
    SOFTCAP: tl.constexpr, ALIBI: tl.constexpr, v_scale, KV_FP8: tl.constexpr,
):
    # fmt: on
    """Fresh online-softmax state ``(acc, m_i, l_i)`` of ``ROWS`` query rows over key tokens ``lo .. hi``:
    the tiles below ``full_hi`` (which every row sees in full) without masks, the rest masked. With
    ``WINDOW``, ``lo`` is the first tile of the first row's window and the tiles below ``edge_hi`` (the
    tile-aligned start of the last row's window) are masked too. With ``KV_FP8`` the accumulator is
    multiplied by ``v_scale`` (the key scale is in ``qk_scale``)."""
    acc = tl.zeros([ROWS, DP], dtype=tl.float32)
    m_i = tl.full([ROWS], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([ROWS], dtype=tl.float32)
    if WINDOW:
        edge = tl.minimum(tl.maximum(edge_hi, lo), hi)
        acc, m_i, l_i = attend_tiles(
            acc, m_i, l_i, q, k_base, v_base, bt_row, skb, skt, svb, svt, lo, edge, seq_len, q_pos, qk_scale,
            offs_d, dmask, BS, BLOCK_N, True, CAUSAL, PREC, DOT_F32, window, softcap2, slopes2, WINDOW, SOFTCAP,
            ALIBI, KV_FP8,
        )  # fmt: skip
        mid = tl.maximum(full_hi, edge)
    else:
        edge = lo
        mid = full_hi
    acc, m_i, l_i = attend_tiles(
        acc, m_i, l_i, q, k_base, v_base, bt_row, skb, skt, svb, svt, edge, mid, seq_len, q_pos, qk_scale,
        offs_d, dmask, BS, BLOCK_N, False, CAUSAL, PREC, DOT_F32, window, softcap2, slopes2, WINDOW, SOFTCAP, ALIBI,
        KV_FP8,
    )  # fmt: skip
    acc, m_i, l_i = attend_tiles(
        acc, m_i, l_i, q, k_base, v_base, bt_row, skb, skt, svb, svt, mid, hi, seq_len, q_pos, qk_scale,
        offs_d, dmask, BS, BLOCK_N, True, CAUSAL, PREC, DOT_F32, window, softcap2, slopes2, WINDOW, SOFTCAP, ALIBI,
        KV_FP8,
    )  # fmt: skip
    if KV_FP8:
        acc = acc * v_scale
    return acc, m_i, l_i


# fmt: off
@triton.jit
def _decode_kernel(  # type: ignore[no-untyped-def]  # a Triton JIT kernel: untyped pointers and constexprs
    q_ptr, kc_ptr, vc_ptr, bt_ptr, sl_ptr, out_ptr, po_ptr, plse_ptr, cnt_ptr, sq_b, sq_h, sq_d, so_b, so_h, so_d,
    sbt_b, skb, skt, skh, svb, svt, svh, qk_scale, chunk, G: tl.constexpr, GP: tl.constexpr, D: tl.constexpr,
    DP: tl.constexpr, BS: tl.constexpr, BLOCK_N: tl.constexpr, DIRECT: tl.constexpr, PREC: tl.constexpr,
    DOT_F32: tl.constexpr, window, softcap2, slopes_ptr, WINDOW: tl.constexpr, SOFTCAP: tl.constexpr,
    ALIBI: tl.constexpr, ks_ptr, vs_ptr, ks_stride, vs_stride, KV_FP8: tl.constexpr, key_ptr, value_ptr, slot_ptr,
    sn_b, sn_h, sn_d, svn_b, svn_h, svn_d, n_slots, LIMIT: tl.constexpr, NEW: tl.constexpr,
):
    # fmt: on
    b = tl.program_id(0)
    kvh = tl.program_id(1)
    sp = tl.program_id(2)
    n_splits = tl.num_programs(2)
    seq_len = tl.load(sl_ptr + b).to(tl.int32)
    # NEW: the step's token (position seq_len - 1) comes from key/value, not the cache, when its slot is in the
    # cache; split 0 stores it there. No program reads that slot, so the store needs no ordering.
    if NEW:
        slot = tl.load(slot_ptr + b).to(tl.int64)
        fresh = tl.where((seq_len > 0) & (slot >= 0) & (slot < n_slots), 1, 0)
    else:
        slot = seq_len * 0
        fresh = seq_len * 0
    n_keys = seq_len - fresh
    # With a window the splits cover only the window: from its first tile to the end.
    if WINDOW:  # noqa: SIM108  # a constexpr branch: only one side is compiled
        first = tl.maximum(seq_len - window, 0)
    else:
        first = seq_len * 0
    lo = (first // BLOCK_N) * BLOCK_N + sp * chunk
    hi = tl.maximum(tl.minimum(lo + chunk, n_keys), lo)
    full_hi = lo + ((hi - lo) // BLOCK_N) * BLOCK_N

    rows = tl.arange(0, GP)
    heads = kvh * G + rows
    rmask = rows < G
    offs_d = tl.arange(0, DP)
    dmask = offs_d < D
    qmask = rmask[:, None] & dmask[None, :]
    q = tl.load(q_ptr + b.to(tl.int64) * sq_b + heads[:, None] * sq_h + offs_d[None, :] * sq_d, mask=qmask, other=0.0)
    if DOT_F32:
        q = q.to(tl.float32)
    if ALIBI:  # noqa: SIM108  # a constexpr branch: only one side is compiled
        slopes2 = tl.load(slopes_ptr + heads, mask=rmask, other=0.0).to(tl.float32) * 1.4426950408889634
    else:
        slopes2 = 0.0

    if KV_FP8:
        ks, vs = tl.load(ks_ptr + kvh * ks_stride), tl.load(vs_ptr + kvh * vs_stride)
    else:
        ks, vs = 1.0, 1.0

    acc, m_i, l_i = attend_span(
        q, kc_ptr + kvh.to(tl.int64) * skh, vc_ptr + kvh.to(tl.int64) * svh, bt_ptr + b.to(tl.int64) * sbt_b,
        skb, skt, svb, svt, lo, full_hi, hi, n_keys, rows * 0 + seq_len - 1, qk_scale * ks, offs_d, dmask, GP, DP,
        BS, BLOCK_N, False, PREC, DOT_F32, tl.cdiv(first, BLOCK_N) * BLOCK_N, window, softcap2, slopes2, WINDOW,
        SOFTCAP, ALIBI, vs, KV_FP8,
    )  # fmt: skip
    if NEW:
        acc, m_i, l_i = _attend_new(
            acc, m_i, l_i, q, key_ptr + b.to(tl.int64) * sn_b + kvh.to(tl.int64) * sn_h,
            value_ptr + b.to(tl.int64) * svn_b + kvh.to(tl.int64) * svn_h, sn_d, svn_d,
            kc_ptr + kvh.to(tl.int64) * skh, vc_ptr + kvh.to(tl.int64) * svh, skb, skt, svb, svt, slot,
            (rows * 0 + fresh - sp) == 1, (offs_d * 0 + fresh - sp) == 1, qk_scale * ks, ks, vs, offs_d, dmask, BS,
            softcap2, SOFTCAP, KV_FP8, LIMIT,
        )  # fmt: skip
    l_safe = tl.where(l_i > 0, l_i, 1.0)
    o = acc / l_safe[:, None]
    o_ptr = out_ptr + b.to(tl.int64) * so_b + heads[:, None] * so_h + offs_d[None, :] * so_d
    if DIRECT:
        tl.store(o_ptr, o.to(out_ptr.dtype.element_ty), mask=qmask)
    else:
        base = (b.to(tl.int64) * (tl.num_programs(1) * G) + heads) * n_splits
        tl.store(po_ptr + (base + sp)[:, None] * DP + offs_d[None, :], o, mask=qmask)
        tl.store(plse_ptr + base + sp, tl.where(l_i > 0, m_i + tl.log2(l_safe), float("-inf")), mask=rmask)
        # The last split of this (sequence, KV head) to finish merges all splits by log-sum-exp and
        # resets the counter for the next launch.
        tl.debug_barrier()
        lock = cnt_ptr + b * tl.num_programs(1) + kvh
        if tl.atomic_add(lock, 1, sem="acq_rel") == n_splits - 1:
            tl.store(lock, 0)
            m_all = tl.full([GP], float("-inf"), dtype=tl.float32)
            den = tl.zeros([GP], dtype=tl.float32)
            num = tl.zeros([GP, DP], dtype=tl.float32)
            for s in range(n_splits):
                lse_s = tl.load(plse_ptr + base + s, mask=rmask, other=0.0, cache_modifier=".cg")
                o_s = tl.load(po_ptr + (base + s)[:, None] * DP + offs_d[None, :], mask=qmask, other=0.0,
                              cache_modifier=".cg")  # fmt: skip
                m_new = tl.maximum(m_all, lse_s)
                # While every split so far is empty m_new is -inf: exp2 relative to 0 gives weight 0,
                # not exp2(-inf - -inf) = NaN; a row with no keys at all (padding) ends with 0 / 1 = 0.
                m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
                a = tl.exp2(m_all - m_ref)
                w = tl.exp2(lse_s - m_ref)
                den = den * a + w
                num = num * a[:, None] + w[:, None] * o_s
                m_all = m_new
            den = tl.where(den > 0, den, 1.0)
            tl.store(o_ptr, (num / den[:, None]).to(out_ptr.dtype.element_ty), mask=qmask)


# fmt: off
@triton.jit
def _attend_new(  # type: ignore[no-untyped-def]  # a Triton JIT kernel: untyped pointers and constexprs
    acc, m_i, l_i, q, k_row, v_row, sk_d, sv_d, kc_base, vc_base, skb, skt, svb, svt, slot, own_rows, own_d,
    qk_scale, ks, vs, offs_d, dmask, BS: tl.constexpr, softcap2, SOFTCAP: tl.constexpr, KV_FP8: tl.constexpr,
    LIMIT: tl.constexpr,
):
    # fmt: on
    """Add the step's own token (``k_row``/``v_row`` of the key/value tensors) to the online-softmax state of
    the rows where ``own_rows`` holds, and store it at ``slot`` where ``own_d`` holds (fp8 caches: quantised
    with saturation, and the quantised value is the one attended to, as if read back). Its ALiBi bias is 0
    (key position = query position) and a window always contains it."""
    k = tl.load(k_row + offs_d * sk_d, mask=dmask, other=0.0)
    v = tl.load(v_row + offs_d * sv_d, mask=dmask, other=0.0)
    if KV_FP8:
        k = tl.minimum(tl.maximum(k.to(tl.float32) / ks, -LIMIT), LIMIT).to(kc_base.dtype.element_ty)
        v = tl.minimum(tl.maximum(v.to(tl.float32) / vs, -LIMIT), LIMIT).to(vc_base.dtype.element_ty)
    smask = dmask & own_d
    blk = slot // BS
    off = slot % BS
    tl.store(kc_base + blk * skb + off * skt + offs_d, k, mask=smask)
    tl.store(vc_base + blk * svb + off * svt + offs_d, v, mask=smask)
    kf = k.to(q.dtype).to(tl.float32)
    vf = v.to(q.dtype).to(tl.float32)
    if KV_FP8:
        vf = vf * vs
    s = tl.sum(q.to(tl.float32) * kf[None, :], 1) * qk_scale
    if SOFTCAP:
        s = softcap2 * _tanh(s / softcap2)
    s = tl.where(own_rows, s, float("-inf"))
    m_new = tl.maximum(m_i, s)
    m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.exp2(m_i - m_ref)
    p = tl.exp2(s - m_ref)
    return acc * alpha[:, None] + p[:, None] * vf[None, :], m_new, l_i * alpha + p


#: The decode kernel (:func:`decode_launch_args` gives its launch arguments).
decode_kernel = _decode_kernel


# ------------------------------------------------------------------ launch helpers
def dot_mode(dtype: torch.dtype) -> tuple[str, bool]:
    """``tl.dot`` settings: exact fp32 products for fp32 caches (no TF32); bf16 dots in fp32 under
    ``TRITON_INTERPRET=1``, whose bf16 ``tl.dot`` returns garbage (Triton 3.9).

    Args:
        dtype: Cache dtype.

    Returns:
        ``(input_precision, dots_in_fp32)``; ``"tf32"`` is ignored by fp16/bf16 dots.
    """
    f32 = dtype == torch.bfloat16 and os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    return ("ieee" if dtype == torch.float32 or f32 else "tf32"), f32


def pad_dim(n: int, minimum: int = 16) -> int:
    """Next power of two ``>= max(n, minimum)`` (``tl.arange`` and ``tl.dot`` shapes).

    Args:
        n: Size.
        minimum: Smallest result.

    Returns:
        The padded size.
    """
    return max(minimum, int(triton.next_power_of_2(n)))


@functools.lru_cache(maxsize=16)
def _sm_count(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).multi_processor_count)
    return 16


#: Streaming multiprocessors of a device (16 off CUDA): what :func:`decode_splits` fills.
sm_count = _sm_count


# Zeroed int32 arrival counters for split decode, one buffer per (device, stream): each launch leaves
# them zero again (the last split of every (sequence, KV head) resets its counter), so launches on one
# stream can share a buffer; launches on different streams never do.
_COUNTERS: dict[tuple[str, int], torch.Tensor] = {}


def _split_counters(device: torch.device, n: int) -> torch.Tensor:
    if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        # A graph replays on whatever stream is current then, while the capture stream's handle may be reused
        # by eager launches: a graph gets its own counters (zeroed by a captured memset at every replay).
        return torch.zeros(n, dtype=torch.int32, device=device)
    stream = torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else 0
    key = (str(device), stream)
    buf = _COUNTERS.get(key)
    if buf is None or buf.numel() < n:
        buf = torch.zeros(max(n, 1024), dtype=torch.int32, device=device)
        _COUNTERS[key] = buf
    return buf


def launch_dims(
    op: str, query: torch.Tensor, k_cache: torch.Tensor, scale: float
) -> tuple[int, int, int, int, int, int]:
    """The dimensions a launch needs, once the softmax scale is checked.

    Args:
        op: The op's name, for the message.
        query: ``[N, Hq, D]``.
        k_cache: ``[num_blocks, block_size, Hkv, D]``.
        scale: Softmax scale.

    Returns:
        ``(N, Hq, D, block_size, Hkv, Hq // Hkv)``.

    Raises:
        InvalidArgumentError: ``scale`` is not positive.
    """
    if not scale > 0:
        raise InvalidArgumentError(f"{op} needs a positive softmax scale; got {scale!r}.")
    n, hq, d = query.shape
    bs, hkv = k_cache.shape[1], k_cache.shape[2]
    return n, hq, d, bs, hkv, hq // hkv


def variant_args(
    query: torch.Tensor, sliding_window: int | None, logits_soft_cap: float | None, alibi_slopes: torch.Tensor | None
) -> dict[str, object]:
    """The variant arguments of a decode or prefill launch (:func:`attend_tiles`).

    Args:
        query: The query (a stand-in pointer when there are no slopes).
        sliding_window: Keys per window, or None.
        logits_soft_cap: Soft cap, or None.
        alibi_slopes: ``[Hq]`` slopes on the query's device, or None.

    Returns:
        Keyword arguments ``window, softcap2, slopes_ptr, WINDOW, SOFTCAP, ALIBI``.
    """
    return {
        "window": 0 if sliding_window is None else sliding_window,
        "softcap2": 1.0 if logits_soft_cap is None else logits_soft_cap * LOG2E,
        "slopes_ptr": query if alibi_slopes is None else alibi_slopes,
        "WINDOW": sliding_window is not None,
        "SOFTCAP": logits_soft_cap is not None,
        "ALIBI": alibi_slopes is not None,
    }


def fp8_args(query: torch.Tensor, k_scale: torch.Tensor | None, v_scale: torch.Tensor | None) -> dict[str, object]:
    """The fp8-cache arguments of a decode or prefill launch.

    Args:
        query: The query (a stand-in pointer when the cache is not fp8).
        k_scale: 1 or ``Hkv`` float32 key scales of an fp8 cache, or None.
        v_scale: Same for values.

    Returns:
        Keyword arguments ``ks_ptr, vs_ptr, ks_stride, vs_stride, KV_FP8``.
    """
    if k_scale is None or v_scale is None:
        return {"ks_ptr": query, "vs_ptr": query, "ks_stride": 0, "vs_stride": 0, "KV_FP8": False}
    strides = {  # a single scale is read by every head
        "ks_stride": k_scale.stride(0) if k_scale.numel() > 1 else 0,
        "vs_stride": v_scale.stride(0) if v_scale.numel() > 1 else 0,
    }
    return {"ks_ptr": k_scale, "vs_ptr": v_scale, **strides, "KV_FP8": True}


def store_kv(
    key: torch.Tensor,
    value: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    *,
    k_scale: torch.Tensor | None = None,
    v_scale: torch.Tensor | None = None,
) -> None:
    """Write ``key[t]`` / ``value[t]`` into flat slot ``slot_mapping[t]`` of the caches (negative or past the
    cache's last slot = skip; no host sync, so a CUDA graph may capture it).

    Args:
        key: ``[T, Hkv, D]``.
        value: ``[T, Hkv, D]``.
        k_cache: ``[num_blocks, block_size, Hkv, D]``, inner three dims contiguous.
        v_cache: Same shape as ``k_cache``.
        slot_mapping: int32/int64 ``[T]``; slot ``s`` is block ``s // block_size``, row ``s % block_size``.
        k_scale: For fp8 caches: 1 or ``Hkv`` float32 key scales; stores ``clamp(key / k_scale)`` in the
            cache's format (saturating at its largest finite value).
        v_scale: Same for values.
    """
    t, h, d = key.shape
    quant = k_scale is not None and v_scale is not None
    if t == 0:
        return
    launch(_store_kv_kernel, (t,))(
        key, value, k_cache, v_cache, slot_mapping,
        key.stride(0), key.stride(1), key.stride(2), value.stride(0), value.stride(1), value.stride(2),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), k_cache.shape[0] * k_cache.shape[1],
        H=h, D=d, HP=triton.next_power_of_2(h), DP=triton.next_power_of_2(d), BS=k_cache.shape[1],
        **{k: v for k, v in fp8_args(key, k_scale, v_scale).items() if k != "KV_FP8"},
        QUANT=quant, LIMIT=float(torch.finfo(k_cache.dtype).max) if quant else 0.0,
        num_warps=4 if h * d >= 2048 else 1,
    )  # fmt: skip


def supports(*, head_dim: int, block_size: int, dtype: torch.dtype) -> bool:
    """Whether these kernels take caches of this geometry and dtype (head dims are padded to a power of
    two >= 16 inside the kernels; beyond 256 the per-program tiles no longer fit in registers).

    Args:
        head_dim: D.
        block_size: Tokens per cache block.
        dtype: Query/cache dtype.

    Returns:
        True for fp16/bf16/fp32, ``1 <= head_dim <= 256`` and ``block_size >= 1``.
    """
    return dtype in (torch.float16, torch.bfloat16, torch.float32) and 1 <= head_dim <= 256 and block_size >= 1


@dataclass(frozen=True)
class DecodeConfig:
    """Decode launch parameters.

    Attributes:
        block_n: Key tokens per tile.
        num_warps: Warps per program.
        num_stages: Software-pipeline depth of the tile loop.
        waves: Split while ``B * Hkv * splits`` stays within ``waves`` x the SM count (no partial wave).
        min_chunk: Fewest key tokens per split.
    """

    block_n: int = 64
    num_warps: int = 4
    num_stages: int = 2
    waves: float = 4.0
    min_chunk: int = 512


def decode_config(head_dim: int, dtype: torch.dtype, group: int) -> DecodeConfig:
    """Default decode configuration for a head dim, dtype and query-head group size.

    Args:
        head_dim: D.
        dtype: Query/cache dtype.
        group: Query heads per KV head.

    Returns:
        The configuration.
    """
    wide = pad_dim(head_dim) * pad_dim(group) * (2 if dtype == torch.float32 else 1)
    block_n = 64 if wide <= 16 * 128 else 32
    warps = 4 if wide <= 16 * 256 else 8
    return DecodeConfig(block_n=block_n, num_warps=warps, num_stages=2)


def decode_splits(batch: int, kv_heads: int, max_tokens: int, sm_count: int, cfg: DecodeConfig) -> tuple[int, int]:
    """Number of context splits and tokens per split for decode.

    Args:
        batch: Sequences.
        kv_heads: KV heads.
        max_tokens: Upper bound of any sequence's length (block-table width x block size).
        sm_count: Streaming multiprocessors (or equivalent) of the device.
        cfg: Launch configuration.

    Returns:
        ``(splits, chunk)``, chunk a multiple of ``cfg.block_n``; ``splits * chunk >= max_tokens``.
    """
    programs = max(1, batch * kv_heads)
    want = max(1, math.floor(cfg.waves * sm_count / programs))
    most = max(1, max_tokens // max(cfg.min_chunk, cfg.block_n))
    splits = min(want, most)
    chunk = triton.cdiv(triton.cdiv(max(max_tokens, 1), splits), cfg.block_n) * cfg.block_n
    return triton.cdiv(max(max_tokens, 1), chunk), chunk


def paged_decode(
    query: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float,
    out: torch.Tensor | None = None,
    *,
    cfg: DecodeConfig | None = None,
    splits: int | None = None,
    sliding_window: int | None = None,
    logits_soft_cap: float | None = None,
    alibi_slopes: torch.Tensor | None = None,
    k_scale: torch.Tensor | None = None,
    v_scale: torch.Tensor | None = None,
    workspace: DecodeWorkspace | None = None,
) -> torch.Tensor:
    """One query token per sequence attending to its ``seq_lens[b]`` cached positions.

    Args:
        query: ``[B, Hq, D]``; ``Hq`` a multiple of the caches' ``Hkv``.
        k_cache: ``[num_blocks, block_size, Hkv, D]``.
        v_cache: Same shape as ``k_cache``.
        block_tables: int32/int64 ``[B, max_blocks]``.
        seq_lens: ``[B]`` visible key positions (``>= 1``).
        scale: Softmax scale (> 0).
        out: Optional ``[B, Hq, D]`` output in the query's dtype.
        cfg: Launch configuration (tuning and tests; default :func:`decode_config`).
        splits: Force this many context splits (default :func:`decode_splits`).
        sliding_window: Keys per window (:mod:`.reference`): the loop starts at the window's first tile and
            the splits cover only ``sliding_window + BLOCK_N`` tokens.
        logits_soft_cap: Soft cap of the scaled scores.
        alibi_slopes: fp32 ``[Hq]`` ALiBi slopes on the query's device.
        k_scale: fp8 caches: 1 or ``Hkv`` float32 key scales (keys read as ``stored * k_scale``).
        v_scale: Same for values.
        workspace: Split buffers to use instead of fresh partials and the per-stream counters (see
            :class:`~.paged_workspace.DecodeWorkspace`); with it the call allocates nothing (``out`` given) and
            may be captured in a CUDA graph.

    Returns:
        ``[B, Hq, D]`` in the query's dtype; rows with ``seq_lens[b] == 0`` are zeros.

    Raises:
        InvalidArgumentError: ``scale`` is not positive, or ``workspace`` is too small for this launch.
    """
    if out is None:
        out = torch.empty_like(query, memory_format=torch.contiguous_format)
    if query.shape[0] == 0:
        launch_dims("paged_decode", query, k_cache, scale)
        return out
    grid, args, kw = decode_launch_args(
        query, k_cache, v_cache, block_tables, seq_lens, scale, out, cfg=cfg, splits=splits,
        sliding_window=sliding_window, logits_soft_cap=logits_soft_cap, alibi_slopes=alibi_slopes,
        k_scale=k_scale, v_scale=v_scale, workspace=workspace,
    )  # fmt: skip
    launch(_decode_kernel, grid)(*args, **kw)
    return out


def paged_decode_store(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    slot_mapping: torch.Tensor,
    scale: float,
    out: torch.Tensor | None = None,
    **options: Any,
) -> torch.Tensor:
    """:func:`store_kv` of the step's new tokens followed by :func:`paged_decode`, in one launch.

    The new token of sequence ``b`` sits at position ``seq_lens[b] - 1``. When ``slot_mapping[b]`` is a slot of
    the cache, the decode takes that token's K/V from ``key``/``value`` (quantised as the store would for fp8
    caches) and one program per (sequence, KV head) stores it; otherwise (negative or past the cache) nothing
    is stored and the token is read from the cache, as :func:`store_kv` then :func:`paged_decode` would.

    Args:
        query: ``[B, Hq, D]``.
        key: ``[B, Hkv, D]`` new keys.
        value: ``[B, Hkv, D]`` new values.
        k_cache: ``[num_blocks, block_size, Hkv, D]``.
        v_cache: Same shape as ``k_cache``.
        block_tables: int32/int64 ``[B, max_blocks]``.
        seq_lens: ``[B]`` key positions including the new token (0: padding row, zeros out).
        slot_mapping: int64 ``[B]`` slot of each new token.
        scale: Softmax scale (> 0).
        out: Optional ``[B, Hq, D]`` output in the query's dtype.
        **options: The keyword arguments of :func:`paged_decode` (``cfg``, ``splits``, the variants, the fp8
            scales, ``workspace``).

    Returns:
        ``[B, Hq, D]`` in the query's dtype.

    Raises:
        InvalidArgumentError: As :func:`paged_decode`.
    """
    if out is None:
        out = torch.empty_like(query, memory_format=torch.contiguous_format)
    if query.shape[0] == 0:
        launch_dims("paged_decode", query, k_cache, scale)
        return out
    grid, args, kw = decode_launch_args(
        query, k_cache, v_cache, block_tables, seq_lens, scale, out, new=(key, value, slot_mapping), **options
    )
    launch(_decode_kernel, grid)(*args, **kw)
    return out


class FusedDecodeLauncher:
    """Repeated :func:`paged_decode_store` launches (a decode step's layers) whose arguments are bound once per
    layout (:func:`~.triton_launch.bind`): a later call with the same batch, dtypes, strides, aliasing, plan
    tensors (the same objects), scale and options only swaps in its query, key, value, caches, output and fp8
    scales. Calls that do not qualify (16-byte misaligned tensors, direct launches off) go through
    :func:`paged_decode_store`'s path.
    """

    def __init__(self) -> None:
        self._bound: dict[tuple[Any, ...], Any] = {}

    def __call__(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, k_cache: torch.Tensor,
        v_cache: torch.Tensor, out: torch.Tensor | None, block_tables: torch.Tensor, seq_lens: torch.Tensor,
        slot_mapping: torch.Tensor, scale: float, *, cfg: DecodeConfig | None = None,
        workspace: DecodeWorkspace | None = None, k_scale: torch.Tensor | None = None,
        v_scale: torch.Tensor | None = None, **variants: Any,
    ) -> torch.Tensor:  # fmt: skip
        """:func:`paged_decode_store` (same arguments; the variants as keywords).

        Args:
            query: ``[B, Hq, D]``, ``B >= 1``.
            key: ``[B, Hkv, D]``.
            value: ``[B, Hkv, D]``.
            k_cache: ``[num_blocks, block_size, Hkv, D]``.
            v_cache: Same shape as ``k_cache``.
            out: ``[B, Hq, D]`` output, or None for a new one.
            block_tables: ``[B, max_blocks]``.
            seq_lens: ``[B]``.
            slot_mapping: ``[B]``.
            scale: Softmax scale.
            cfg: As :func:`paged_decode`.
            workspace: As :func:`paged_decode`.
            k_scale: As :func:`paged_decode`.
            v_scale: As :func:`paged_decode`.
            **variants: ``sliding_window``, ``logits_soft_cap``, ``alibi_slopes``.

        Returns:
            ``out``.
        """
        if out is None:
            out = torch.empty_like(query, memory_format=torch.contiguous_format)
        live: tuple[torch.Tensor, ...] = (query, key, value, k_cache, v_cache, out)
        if k_scale is not None and v_scale is not None:
            live = (*live, k_scale, v_scale)
        ptr = 0
        for t in live:
            ptr |= t.data_ptr()
        ids = tuple(map(id, live))
        alias = None if len(set(ids)) == len(ids) else tuple(map(ids.index, ids))  # a tensor in two roles
        # Ids of tensors a binding holds (plan tensors, workspace buffers, slopes) stay theirs while it lives.
        ws = None
        if workspace is not None:
            ws = (id(workspace.partial_out), id(workspace.partial_lse), id(workspace.counters))
        sig = (
            query.shape[0], query.dtype, k_cache.dtype, query.stride(), key.stride(), value.stride(),
            k_cache.stride(), v_cache.stride(), out.stride(), alias, id(block_tables), id(seq_lens),
            id(slot_mapping), ws, cfg, scale, *variants.items(), *[(t.shape, t.stride()) for t in live[6:]],
        )  # fmt: skip
        bound = self._bound.get(sig) if ptr % 16 == 0 else None
        if bound is not None:
            bound(*live)
            return out
        from . import triton_launch

        grid, args, kw = decode_launch_args(
            query, k_cache, v_cache, block_tables, seq_lens, scale, out, cfg=cfg, workspace=workspace,
            k_scale=k_scale, v_scale=v_scale, new=(key, value, slot_mapping), **variants,
        )  # fmt: skip
        launch(_decode_kernel, grid)(*args, **kw)
        if ptr % 16 == 0:
            found = triton_launch.bind(_decode_kernel, grid, args, kw, live)
            if found is not None:
                if len(self._bound) >= 256:
                    self._bound.clear()
                self._bound[sig] = found
        return out


def decode_launch_args(
    query: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float,
    out: torch.Tensor,
    *,
    cfg: DecodeConfig | None = None,
    splits: int | None = None,
    sliding_window: int | None = None,
    logits_soft_cap: float | None = None,
    alibi_slopes: torch.Tensor | None = None,
    k_scale: torch.Tensor | None = None,
    v_scale: torch.Tensor | None = None,
    workspace: DecodeWorkspace | None = None,
    new: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> tuple[tuple[int, int, int], tuple[Any, ...], dict[str, Any]]:
    """The grid, positional and keyword arguments of one decode launch (:func:`paged_decode`; with
    ``new = (key, value, slot_mapping)`` :func:`paged_decode_store`); ``B >= 1``.

    Args:
        query: ``[B, Hq, D]``.
        k_cache: ``[num_blocks, block_size, Hkv, D]``.
        v_cache: Same shape as ``k_cache``.
        block_tables: ``[B, max_blocks]``.
        seq_lens: ``[B]``.
        scale: Softmax scale.
        out: ``[B, Hq, D]`` output.
        cfg: As :func:`paged_decode`.
        splits: As :func:`paged_decode`.
        sliding_window: As :func:`paged_decode`.
        logits_soft_cap: As :func:`paged_decode`.
        alibi_slopes: As :func:`paged_decode`.
        k_scale: As :func:`paged_decode`.
        v_scale: As :func:`paged_decode`.
        workspace: As :func:`paged_decode`.
        new: The step's ``(key, value, slot_mapping)`` to store and attend to, or None.

    Returns:
        ``(grid, args, kwargs)`` for ``launch(_decode_kernel, grid)(*args, **kwargs)``.

    Raises:
        InvalidArgumentError: ``scale`` is not positive, or ``workspace`` is too small for this launch.
    """
    b, hq, d, bs, hkv, g = launch_dims("paged_decode", query, k_cache, scale)
    cfg = cfg or decode_config(d, query.dtype, g)
    max_tokens = block_tables.shape[1] * bs
    if sliding_window is not None:
        max_tokens = min(max_tokens, sliding_window + cfg.block_n)
    if splits is None:
        n_split, chunk = decode_splits(b, hkv, max_tokens, _sm_count(query.device), cfg)
    else:
        chunk = triton.cdiv(triton.cdiv(max(max_tokens, 1), splits), cfg.block_n) * cfg.block_n
        n_split = splits
    dp = pad_dim(d)
    prec, dot_f32 = dot_mode(query.dtype)
    direct = n_split == 1
    if direct:
        po, plse, cnt = out, out, out
    elif workspace is not None:
        po, plse, cnt = workspace.partial_out, workspace.partial_lse, workspace.counters
        if po.numel() < b * hq * n_split * dp or plse.numel() < b * hq * n_split or cnt.numel() < b * hkv:
            raise InvalidArgumentError(
                f"paged_decode workspace too small for {b} sequences x {hq} heads x {n_split} splits (head dim "
                f"padded to {dp}); size it with wrapper.decode_workspace() for the largest batch."
            )
    else:
        po = torch.empty((b, hq, n_split, dp), dtype=torch.float32, device=query.device)
        plse = torch.empty((b, hq, n_split), dtype=torch.float32, device=query.device)
        cnt = _split_counters(query.device, b * hkv)
    if new is None:
        nk, nv, ns = query, query, seq_lens
        new_kw: dict[str, Any] = {"sn_b": 0, "sn_h": 0, "sn_d": 0, "svn_b": 0, "svn_h": 0, "svn_d": 0, "n_slots": 0}
    else:
        nk, nv, ns = new
        new_kw = {
            "sn_b": nk.stride(0), "sn_h": nk.stride(1), "sn_d": nk.stride(2), "svn_b": nv.stride(0),
            "svn_h": nv.stride(1), "svn_d": nv.stride(2), "n_slots": k_cache.shape[0] * bs,
        }  # fmt: skip
    fp8 = fp8_args(query, k_scale, v_scale)
    args = (
        query, k_cache, v_cache, block_tables, seq_lens, out, po, plse, cnt,
        query.stride(0), query.stride(1), query.stride(2), out.stride(0), out.stride(1), out.stride(2),
        block_tables.stride(0), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), scale * LOG2E, chunk,
    )  # fmt: skip
    kw: dict[str, Any] = {
        "G": g, "GP": pad_dim(g), "D": d, "DP": dp, "BS": bs, "BLOCK_N": cfg.block_n, "DIRECT": direct,
        "PREC": prec, "DOT_F32": dot_f32, **variant_args(query, sliding_window, logits_soft_cap, alibi_slopes),
        **fp8, "key_ptr": nk, "value_ptr": nv, "slot_ptr": ns, **new_kw,
        "LIMIT": float(torch.finfo(k_cache.dtype).max) if fp8["KV_FP8"] and new is not None else 0.0,
        "NEW": new is not None, "num_warps": cfg.num_warps, "num_stages": cfg.num_stages,
    }  # fmt: skip
    return (b, hkv, n_split), args, kw


#: :func:`paged_decode`, by the name the tuning scripts call it with an explicit ``cfg``.
paged_decode_with = paged_decode
