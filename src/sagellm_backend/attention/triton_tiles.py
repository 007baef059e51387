"""The tile loop the paged-attention Triton kernels share: online softmax over gathered pages, with the variants
(sliding window, soft cap, ALiBi) and fp8 caches. Decode (:mod:`.paged_triton`) and prefill
(:mod:`.paged_triton_prefill`) call :func:`attend_span`.

Imported lazily (it imports triton).
"""

from __future__ import annotations

import triton
import triton.language as tl

__all__ = [
    "LOG2E", "attend_span", "attend_tiles", "fp8_to_f16", "fresh_state", "head_factors", "quantize_fp8", "tanh_exp2",
    "tile_at",
]  # fmt: skip

LOG2E = 1.4426950408889634


@triton.jit
def quantize_fp8(x, scale, LIMIT: tl.constexpr):  # type: ignore[no-untyped-def]  # a Triton JIT function
    """``clamp(x / scale, -LIMIT, LIMIT)`` in fp32, the division correctly rounded (``x / scale`` in Triton is an
    approximate division, whose last bit would differ from torch's quantiser); the caller casts to the fp8 dtype."""
    return tl.minimum(tl.maximum(tl.div_rn(x.to(tl.float32), scale), -LIMIT), LIMIT)


@triton.jit
def fp8_to_f16(x, FMT: tl.constexpr):  # type: ignore[no-untyped-def]  # a Triton JIT function
    """fp8 -> fp16 (exact) by the hardware's paired conversion, four values per 32-bit register as loaded; ``FMT``
    1 for e4m3, 2 for e5m2. As inline assembly the conversion stays where it is written: on a value tile it runs
    before the tile is laid out for the dot, which then moves fp16 through shared memory with ``ldmatrix.trans``
    (``.to(tl.float16)`` is moved past that layout change by the compiler, which then gathers the transposed fp8
    bytes one at a time). Needs sm_89 or later; not under the interpreter."""
    if FMT == 1:
        return tl.inline_asm_elementwise(
            "{ .reg .b16 lo, hi; mov.b32 {lo, hi}, $2; cvt.rn.f16x2.e4m3x2 $0, lo; cvt.rn.f16x2.e4m3x2 $1, hi; }",
            "=r,=r,r", [x], dtype=tl.float16, is_pure=False, pack=4,
        )  # fmt: skip
    else:
        return tl.inline_asm_elementwise(
            "{ .reg .b16 lo, hi; mov.b32 {lo, hi}, $2; cvt.rn.f16x2.e5m2x2 $0, lo; cvt.rn.f16x2.e5m2x2 $1, hi; }",
            "=r,=r,r", [x], dtype=tl.float16, is_pure=False, pack=4,
        )  # fmt: skip


@triton.jit
def fresh_state(ROWS: tl.constexpr, DP: tl.constexpr):  # type: ignore[no-untyped-def]  # a Triton JIT function
    """The online-softmax state of ``ROWS`` query rows before any key: ``(acc, m_i, l_i)`` = zeros, ``-inf``, zeros."""
    return (
        tl.zeros([ROWS, DP], dtype=tl.float32), tl.full([ROWS], float("-inf"), dtype=tl.float32),
        tl.zeros([ROWS], dtype=tl.float32),
    )  # fmt: skip


@triton.jit
def tanh_exp2(x):  # type: ignore[no-untyped-def]  # a Triton JIT function
    """``tanh`` from one ``exp2`` (saturates to +-1 without overflow to NaN)."""
    return 1.0 - 2.0 / (tl.exp2(x * 2.8853900817779268) + 1.0)


@triton.jit
def head_factors(  # type: ignore[no-untyped-def]  # a Triton JIT function: untyped pointers and constexprs
    slopes_ptr, heads, hmask, ks_ptr, vs_ptr, kvh, ks_stride, vs_stride, ALIBI: tl.constexpr, KV_FP8: tl.constexpr
):
    """The per-program factors of the variants: ``slopes2``, the ALiBi slopes of query heads ``heads`` (rows
    where ``hmask`` holds) times log2(e), 0.0 without ``ALIBI``; and ``(ks, vs)``, KV head ``kvh``'s fp8 key
    and value scales, 1.0 without ``KV_FP8``."""
    if ALIBI:  # noqa: SIM108  # a constexpr branch: only one side is compiled
        slopes2 = tl.load(slopes_ptr + heads, mask=hmask, other=0.0).to(tl.float32) * 1.4426950408889634
    else:
        slopes2 = 0.0
    if KV_FP8:
        ks, vs = tl.load(ks_ptr + kvh * ks_stride), tl.load(vs_ptr + kvh * vs_stride)
    else:
        ks, vs = 1.0, 1.0
    return slopes2, ks, vs


@triton.jit
def tile_at(base, page, tok, sb, st, offs_d, ONE_PAGE: tl.constexpr):  # type: ignore[no-untyped-def]  # Triton JIT
    """The addresses of a tile's rows ``tok`` of page(s) ``page`` (block stride ``sb``, token stride ``st``), each
    ``offs_d`` wide. ``ONE_PAGE``: ``page`` is one number (the tile lies in one page) and the tokens' offsets within
    it are 32-bit; else ``page`` holds each token's page."""
    if ONE_PAGE:  # noqa: SIM108  # a constexpr branch: only one side is compiled
        rows = base + page * sb + (tok * st)[:, None]
    else:
        rows = base + (page * sb + tok * st)[:, None]
    return rows + offs_d[None, :]


# fmt: off
@triton.jit
def attend_tiles(  # type: ignore[no-untyped-def]  # a Triton JIT kernel: untyped pointers and constexprs
    acc, m_i, l_i, q, k_base, v_base, bt_row, skb, skt, svb, svt, lo, hi, seq_len, q_pos, qk_scale, offs_d,
    dmask, BS: tl.constexpr, BLOCK_N: tl.constexpr, MASK: tl.constexpr, CAUSAL: tl.constexpr,
    PREC: tl.constexpr, DOT_F32: tl.constexpr, window, softcap2, slopes2, WINDOW: tl.constexpr,
    SOFTCAP: tl.constexpr, ALIBI: tl.constexpr, KV_FP8: tl.constexpr, EARLY_V: tl.constexpr = False,
    V_ASM: tl.constexpr = 0, ONE_PAGE: tl.constexpr = False,
):
    # fmt: on
    """Online-softmax update of ``(acc, m_i, l_i)`` with key tokens ``lo .. hi`` (step ``BLOCK_N``).

    ``MASK`` masks tokens ``>= seq_len`` (and, with ``CAUSAL``, tokens after each row's
    ``q_pos``; with ``WINDOW``, tokens ``window`` or more before it); without it every token of every
    tile must be visible to every row. ``DOT_F32`` (with ``q`` already fp32) runs both dots in fp32.
    The variants work in base 2: ``softcap2`` is the cap times log2(e), ``slopes2`` the rows' ALiBi
    slopes times log2(e). With ``WINDOW`` a row may see no key of a tile while its state is empty.
    ``KV_FP8``: the caches hold fp8, converted to the query's dtype in registers (the callers fold the
    scales into ``qk_scale`` and the final accumulator). ``EARLY_V`` issues a tile's value load before its key
    dot (both tiles in flight at once without software pipelining). ``V_ASM`` (fp8 caches, fp16 query only): the
    value tiles are converted by :func:`fp8_to_f16` with that ``FMT``. ``ONE_PAGE``: every tile lies in one page
    (``lo`` a multiple of ``BLOCK_N``, which divides ``BS``), whose number is read once per tile, not per token.
    """
    for start in range(lo, hi, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        if MASK:
            in_seq = offs_n < seq_len
            ld_mask = in_seq[:, None] & dmask[None, :]
        else:
            ld_mask = dmask[None, :]
        if ONE_PAGE:  # one page number per tile
            if MASK:
                page = tl.load(bt_row + start // BS, mask=start < seq_len, other=0).to(tl.int64)
            else:
                page = tl.load(bt_row + start // BS).to(tl.int64)
            tok = (start % BS) + tl.arange(0, BLOCK_N)
        else:
            if MASK:
                page = tl.load(bt_row + offs_n // BS, mask=in_seq, other=0).to(tl.int64)
            else:
                page = tl.load(bt_row + offs_n // BS).to(tl.int64)
            tok = offs_n % BS
        k = tl.load(tile_at(k_base, page, tok, skb, skt, offs_d, ONE_PAGE), mask=ld_mask, other=0.0)
        if EARLY_V:
            v = tl.load(tile_at(v_base, page, tok, svb, svt, offs_d, ONE_PAGE), mask=ld_mask, other=0.0)
        if KV_FP8:
            k = k.to(q.dtype)
        if DOT_F32:
            k = k.to(tl.float32)
        s = tl.dot(q, tl.trans(k), input_precision=PREC)
        if SOFTCAP or ALIBI:
            s = s * qk_scale
            if SOFTCAP:
                s = softcap2 * tanh_exp2(s / softcap2)
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
        if not EARLY_V:
            v = tl.load(tile_at(v_base, page, tok, svb, svt, offs_d, ONE_PAGE), mask=ld_mask, other=0.0)
        if KV_FP8:
            if V_ASM:  # noqa: SIM108  # a constexpr branch: only one side is compiled
                v = fp8_to_f16(v, V_ASM)
            else:
                v = v.to(q.dtype)
        if DOT_F32:
            v = v.to(tl.float32)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=PREC)
        m_i = m_new
    return acc, m_i, l_i


# fmt: off
@triton.jit
def attend_span(  # type: ignore[no-untyped-def]  # a Triton JIT kernel: untyped pointers and constexprs
    acc, m_i, l_i, q, k_base, v_base, bt_row, skb, skt, svb, svt, lo, full_hi, hi, seq_len, q_pos, qk_scale, offs_d,
    dmask, ROWS: tl.constexpr, DP: tl.constexpr, BS: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr,
    PREC: tl.constexpr, DOT_F32: tl.constexpr, edge_hi, window, softcap2, slopes2, WINDOW: tl.constexpr,
    SOFTCAP: tl.constexpr, ALIBI: tl.constexpr, v_scale, KV_FP8: tl.constexpr, EARLY_V: tl.constexpr = False,
    V_ASM: tl.constexpr = 0, ONE_PAGE: tl.constexpr = False,
):
    # fmt: on
    """The online-softmax state ``(acc, m_i, l_i)`` of ``ROWS`` query rows (fresh: :func:`fresh_state`) carried
    over key tokens ``lo .. hi``: the tiles below ``full_hi`` (which every row sees in full) without masks, the
    rest masked. With ``WINDOW``, ``lo`` is the first tile of the first row's window and the tiles below
    ``edge_hi`` (the tile-aligned start of the last row's window) are masked too. With ``KV_FP8`` the accumulator
    is multiplied by ``v_scale`` at the end, the given state's part included (the key scale is in ``qk_scale``).
    ``EARLY_V``, ``V_ASM`` and ``ONE_PAGE`` as :func:`attend_tiles`."""
    if WINDOW:
        edge = tl.minimum(tl.maximum(edge_hi, lo), hi)
        acc, m_i, l_i = attend_tiles(
            acc, m_i, l_i, q, k_base, v_base, bt_row, skb, skt, svb, svt, lo, edge, seq_len, q_pos, qk_scale,
            offs_d, dmask, BS, BLOCK_N, True, CAUSAL, PREC, DOT_F32, window, softcap2, slopes2, WINDOW, SOFTCAP,
            ALIBI, KV_FP8, EARLY_V, V_ASM, ONE_PAGE,
        )  # fmt: skip
        mid = tl.maximum(full_hi, edge)
    else:
        edge = lo
        mid = full_hi
    acc, m_i, l_i = attend_tiles(
        acc, m_i, l_i, q, k_base, v_base, bt_row, skb, skt, svb, svt, edge, mid, seq_len, q_pos, qk_scale,
        offs_d, dmask, BS, BLOCK_N, False, CAUSAL, PREC, DOT_F32, window, softcap2, slopes2, WINDOW, SOFTCAP, ALIBI,
        KV_FP8, EARLY_V, V_ASM, ONE_PAGE,
    )  # fmt: skip
    acc, m_i, l_i = attend_tiles(
        acc, m_i, l_i, q, k_base, v_base, bt_row, skb, skt, svb, svt, mid, hi, seq_len, q_pos, qk_scale,
        offs_d, dmask, BS, BLOCK_N, True, CAUSAL, PREC, DOT_F32, window, softcap2, slopes2, WINDOW, SOFTCAP, ALIBI,
        KV_FP8, EARLY_V, V_ASM, ONE_PAGE,
    )  # fmt: skip
    if KV_FP8:
        acc = acc * v_scale
    return acc, m_i, l_i
