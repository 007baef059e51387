"""The paged-attention Triton kernels: the K/V store into pages, and split-K decode (which can also store and
attend to each sequence's new token in the same launch). :mod:`.paged_triton` launches them.

Imported lazily (it imports triton).
"""

from __future__ import annotations

import triton
import triton.language as tl

from ..kernels.rope_tiles import cos_sin_at
from .triton_tiles import attend_span, fresh_state, head_factors, quantize_fp8, tanh_exp2

__all__ = [
    "attend_new", "decode_kernel", "decode_split", "gpu_clock", "long_spans", "rope_factors", "sm_id",
    "store_kv_kernel", "trace_point",
]  # fmt: skip


# ------------------------------------------------------------------ kernels
@triton.jit
def dependent_launch():  # type: ignore[no-untyped-def]  # a Triton JIT function
    """The start of a programmatic dependent launch (``PDL``): wait until the kernel before this one on the stream
    has finished and its writes are visible, before any global access of this program. The kernel after this one
    is released when this one's programs exit, not earlier: programs of the next launch placed while these still
    run land unevenly over the SMs (docs/PERFORMANCE.md, programmatic dependent launch)."""
    tl.extra.cuda.gdc_wait()


# fmt: off
@triton.jit
def store_kv_kernel(  # type: ignore[no-untyped-def]  # a Triton JIT kernel: untyped pointers and constexprs
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
        k = quantize_fp8(k, ks, LIMIT).to(kc_ptr.dtype.element_ty)
        v = quantize_fp8(v, vs, LIMIT).to(vc_ptr.dtype.element_ty)
    tl.store(kc_ptr + blk * skc_b + off * skc_t + h * skc_h + d, k, mask=m)
    tl.store(vc_ptr + blk * svc_b + off * svc_t + h * svc_h + d, v, mask=m)




# fmt: off
@triton.jit
def rope_factors(  # type: ignore[no-untyped-def]  # a Triton JIT function: untyped pointers and constexprs
    cs_ptr, s_cs, max_pos, pos, offs_d, ROPE: tl.constexpr, HALF: tl.constexpr,
):
    # fmt: on
    """``(partner, cos, signed sin)`` per head dim of position ``pos`` (:mod:`...kernels.rope`'s semantics): a
    rotated dim ``d`` becomes ``x[d] * cos + x[partner] * sin``; ``ROPE`` 1 pairs the halves (NeoX), 2 neighbours
    (GPT-J); dims past ``2 * HALF`` and positions outside ``[0, max_pos)`` are left as they are (cos 1, sin 0)."""
    rot = offs_d < 2 * HALF
    if ROPE == 1:
        first = offs_d < HALF
        partner = tl.where(first, offs_d + HALF, offs_d - HALF)
        ci = tl.where(first, offs_d, offs_d - HALF)
        sign = tl.where(first, -1.0, 1.0)
    else:
        partner = offs_d ^ 1
        ci = offs_d // 2
        sign = tl.where(offs_d % 2 == 0, -1.0, 1.0)
    cos, sin = cos_sin_at(cs_ptr, s_cs, max_pos, pos, ci, rot, HALF)
    return tl.where(rot, partner, offs_d), cos, sin * sign


#: int64 fields per program of a traced decode launch (:func:`trace_point`).
TRACE_FIELDS: tl.constexpr = tl.constexpr(8)


@triton.jit
def gpu_clock(after):  # type: ignore[no-untyped-def]  # a Triton JIT function
    """The GPU's nanosecond clock (``%globaltimer``, int64), read once ``after`` (an int32 scalar) is known. CUDA
    only (inline assembly; not under the interpreter)."""
    return tl.inline_asm_elementwise(
        "mov.u64 $0, %globaltimer;", "=l,r", [after], dtype=tl.int64, is_pure=False, pack=1
    )  # fmt: skip


@triton.jit
def sm_id(after):  # type: ignore[no-untyped-def]  # a Triton JIT function
    """The SM this program runs on (``%smid``, int32), read once ``after`` (an int32 scalar) is known. CUDA only."""
    return tl.inline_asm_elementwise("mov.u32 $0, %smid;", "=r,r", [after], dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def trace_point(row, field: tl.constexpr, after):  # type: ignore[no-untyped-def]  # a Triton JIT function
    """Store the GPU's nanosecond clock (``%globaltimer``) at ``row[field]``, read once ``after`` (any int32 scalar
    the moment depends on) is known. A traced decode launch (``TRACE``, a diagnostic for
    ``bench/probe_decode_trace.py``; never on by the library) writes per program, at ``trace_ptr + program *
    TRACE_FIELDS``: 0 its start, 1 the end of its keys, 2 its partial counted (or its result stored), 3 its end
    (after the merge where it merged), 4 whether it stored the result (1) or only a partial (0), 5 its SM. Programs
    past their span write nothing. CUDA only (inline assembly; not under the interpreter)."""
    tl.store(row + field, gpu_clock(after))


# fmt: off
@triton.jit
def decode_kernel(  # type: ignore[no-untyped-def]  # a Triton JIT kernel: untyped pointers and constexprs
    q_ptr, kc_ptr, vc_ptr, bt_ptr, sl_ptr, out_ptr, po_ptr, plse_ptr, cnt_ptr, sq_b, sq_h, sq_d, so_b, so_h, so_d,
    sbt_b, skb, skt, skh, svb, svt, svh, qk_scale, chunk_floor, G: tl.constexpr, GP: tl.constexpr, D: tl.constexpr,
    DP: tl.constexpr, BS: tl.constexpr, BLOCK_N: tl.constexpr, DIRECT: tl.constexpr, PREC: tl.constexpr,
    DOT_F32: tl.constexpr, window, softcap2, slopes_ptr, WINDOW: tl.constexpr, SOFTCAP: tl.constexpr,
    ALIBI: tl.constexpr, ks_ptr, vs_ptr, ks_stride, vs_stride, KV_FP8: tl.constexpr, key_ptr, value_ptr, slot_ptr,
    sn_b, sn_h, sn_d, svn_b, svn_h, svn_d, n_slots, LIMIT: tl.constexpr, NEW: tl.constexpr,
    F16_DOT: tl.constexpr, EARLY_V: tl.constexpr, cs_ptr, s_cs, max_pos, ROPE: tl.constexpr, HALF: tl.constexpr,
    V_ASM: tl.constexpr, MERGE: tl.constexpr, PDL: tl.constexpr, n_fill, slots, long_ratio, long_piece,
    LONG_ROWS: tl.constexpr, trace_ptr, TRACE: tl.constexpr,
):
    # fmt: on
    if PDL:
        dependent_launch()
    b = tl.program_id(0)
    kvh = tl.program_id(1)
    n_splits = tl.num_programs(2)
    sp = tl.program_id(2)
    if TRACE:  # the program's start and SM (a diagnostic launch: see :func:`trace_point`)
        row = trace_ptr + ((sp * tl.num_programs(1) + kvh) * tl.num_programs(0) + b).to(tl.int64) * TRACE_FIELDS
        trace_point(row, 0, b)
        tl.store(row + 5, sm_id(b).to(tl.int64))
    else:
        row = trace_ptr
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
    # Each sequence's span (from the first tile to its last key) is spread over its splits, at least chunk_floor
    # tokens per split: a short context uses more of a launch sized for the longest one. Every split but the last
    # takes the same count, rounded up to whole tiles (a window's masked first tiles end at a tile boundary).
    start = (first // BLOCK_N) * BLOCK_N
    span = tl.maximum(n_keys - start, 0)
    if LONG_ROWS:  # the grid has splits for the long spans of a mixed batch (their mean read over LONG_ROWS rows)
        n_here, floor = long_spans(
            sl_ptr, tl.num_programs(0), tl.num_programs(1), span, n_fill, n_splits, chunk_floor, slots, long_ratio,
            long_piece, window, WINDOW, BLOCK_N, LONG_ROWS,
        )  # fmt: skip
    else:
        n_here = n_splits
        floor = chunk_floor
    chunk = tl.maximum(tl.cdiv(tl.cdiv(span, BLOCK_N), n_here) * BLOCK_N, floor)
    # Splits past the span hold nothing and do nothing (split 0 holds at least the step's own token).
    n_used = tl.maximum(tl.minimum(tl.cdiv(span, chunk), n_splits), 1)
    if sp < n_used:
        decode_split(
            q_ptr, kc_ptr, vc_ptr, bt_ptr, out_ptr, po_ptr, plse_ptr, cnt_ptr, sq_b, sq_h, sq_d, so_b, so_h, so_d,
            sbt_b, skb, skt, skh, svb, svt, svh, qk_scale, G, GP, D, DP, BS, BLOCK_N, DIRECT, PREC, DOT_F32, window,
            softcap2, slopes_ptr, WINDOW, SOFTCAP, ALIBI, ks_ptr, vs_ptr, ks_stride, vs_stride, KV_FP8, key_ptr,
            value_ptr, sn_b, sn_h, sn_d, svn_b, svn_h, svn_d, LIMIT, NEW, F16_DOT, EARLY_V, cs_ptr, s_cs, max_pos,
            ROPE, HALF, V_ASM, MERGE, b, kvh, sp, n_splits, n_used, seq_len, slot, fresh, n_keys, first, chunk,
            start + sp * chunk, row, TRACE,
        )  # fmt: skip


# fmt: off
@triton.jit
def decode_split(  # type: ignore[no-untyped-def]  # a Triton JIT function: untyped pointers and constexprs
    q_ptr, kc_ptr, vc_ptr, bt_ptr, out_ptr, po_ptr, plse_ptr, cnt_ptr, sq_b, sq_h, sq_d, so_b, so_h, so_d,
    sbt_b, skb, skt, skh, svb, svt, svh, qk_scale, G: tl.constexpr, GP: tl.constexpr, D: tl.constexpr,
    DP: tl.constexpr, BS: tl.constexpr, BLOCK_N: tl.constexpr, DIRECT: tl.constexpr, PREC: tl.constexpr,
    DOT_F32: tl.constexpr, window, softcap2, slopes_ptr, WINDOW: tl.constexpr, SOFTCAP: tl.constexpr,
    ALIBI: tl.constexpr, ks_ptr, vs_ptr, ks_stride, vs_stride, KV_FP8: tl.constexpr, key_ptr, value_ptr,
    sn_b, sn_h, sn_d, svn_b, svn_h, svn_d, LIMIT: tl.constexpr, NEW: tl.constexpr, F16_DOT: tl.constexpr,
    EARLY_V: tl.constexpr, cs_ptr, s_cs, max_pos, ROPE: tl.constexpr, HALF: tl.constexpr, V_ASM: tl.constexpr,
    MERGE: tl.constexpr, b, kvh, sp, n_splits, n_used, seq_len, slot, fresh, n_keys, first, chunk, lo, row,
    TRACE: tl.constexpr,
):
    # fmt: on
    """One used split of :func:`decode_kernel`: keys ``[lo, lo + chunk)`` of sequence ``b``'s span for KV head
    ``kvh``'s query heads; with one used split the result is stored as it is, else as a partial that the last of
    the ``n_used`` splits to finish merges. With ``TRACE``, ``row`` is the program's :func:`trace_point` row."""
    hi = tl.maximum(tl.minimum(lo + chunk, n_keys), lo)
    full_hi = lo + ((hi - lo) // BLOCK_N) * BLOCK_N

    rows = tl.arange(0, GP)
    heads = kvh * G + rows
    rmask = rows < G
    offs_d = tl.arange(0, DP)
    dmask = offs_d < D
    qmask = rmask[:, None] & dmask[None, :]
    q_row = q_ptr + b.to(tl.int64) * sq_b + heads[:, None] * sq_h
    q = tl.load(q_row + offs_d[None, :] * sq_d, mask=qmask, other=0.0)
    if ROPE:  # the query and the new key are rotated to position seq_len - 1 here, not by a RoPE launch before
        partner, cos, sin = rope_factors(cs_ptr, s_cs, max_pos, seq_len.to(tl.int64) - 1, offs_d, ROPE, HALF)
        qp = tl.load(q_row + partner[None, :] * sq_d, mask=qmask, other=0.0).to(tl.float32)
        q = (q.to(tl.float32) * cos[None, :] + qp * sin[None, :]).to(q_ptr.dtype.element_ty)
    else:
        partner, cos, sin = offs_d, 1.0, 0.0
    if DOT_F32:
        q = q.to(tl.float32)
    slopes2, ks, vs = head_factors(slopes_ptr, heads, rmask, ks_ptr, vs_ptr, kvh, ks_stride, vs_stride, ALIBI, KV_FP8)
    qs = qk_scale * ks
    if F16_DOT:
        # fp8 cache, bf16 query: both dots in fp16 (fp8 -> fp16 is one conversion, exact). q is scaled by a power
        # of two that brings its largest magnitude to [2^14, 2^15), exactly undone in the score scale.
        qa = tl.max(tl.max(tl.abs(q.to(tl.float32)), 1), 0)
        e = tl.minimum(tl.maximum(14.0 - tl.floor(tl.log2(tl.maximum(qa, 1e-30))), -100.0), 100.0)
        q = (q.to(tl.float32) * tl.exp2(e)).to(tl.float16)
        qs = qs * tl.exp2(-e)
    acc, m_i, l_i = fresh_state(GP, DP)
    if NEW:  # the step's token first: nothing of it (its K/V, slot, RoPE factors) stays live across the tile loop
        acc, m_i, l_i = attend_new(
            acc, m_i, l_i, q, key_ptr + b.to(tl.int64) * sn_b + kvh.to(tl.int64) * sn_h,
            value_ptr + b.to(tl.int64) * svn_b + kvh.to(tl.int64) * svn_h, sn_d, svn_d,
            kc_ptr + kvh.to(tl.int64) * skh, vc_ptr + kvh.to(tl.int64) * svh, skb, skt, svb, svt, slot,
            (rows * 0 + fresh - sp) == 1, (offs_d * 0 + fresh - sp) == 1, qs, ks, vs, offs_d, dmask, BS,
            softcap2, SOFTCAP, KV_FP8, LIMIT, partner, cos, sin, ROPE,
        )  # fmt: skip
    acc, m_i, l_i = attend_span(
        acc, m_i, l_i, q, kc_ptr + kvh.to(tl.int64) * skh, vc_ptr + kvh.to(tl.int64) * svh,
        bt_ptr + b.to(tl.int64) * sbt_b, skb, skt, svb, svt, lo, full_hi, hi, hi, rows * 0 + seq_len - 1, qs,
        offs_d, dmask, GP, DP, BS, BLOCK_N, False, PREC, DOT_F32, tl.cdiv(first, BLOCK_N) * BLOCK_N, window,
        softcap2, slopes2, WINDOW, SOFTCAP, ALIBI, vs, KV_FP8, EARLY_V, V_ASM, BS % BLOCK_N == 0,
    )  # fmt: skip
    l_safe = tl.where(l_i > 0, l_i, 1.0)
    o = acc / l_safe[:, None]
    if TRACE:  # the keys walked (the time depends on the state they left)
        trace_point(row, 1, tl.sum(tl.sum(o, 1), 0).to(tl.int32, bitcast=True))
    o_ptr = out_ptr + b.to(tl.int64) * so_b + heads[:, None] * so_h + offs_d[None, :] * so_d
    if DIRECT or n_used == 1:
        tl.store(o_ptr, o.to(out_ptr.dtype.element_ty), mask=qmask)
        if TRACE:
            trace_point(row, 2, sp)
            trace_point(row, 3, sp)
            tl.store(row + 4, 1)
    else:
        base = (b.to(tl.int64) * (tl.num_programs(1) * G) + heads) * n_splits
        tl.store(po_ptr + (base + sp)[:, None] * DP + offs_d[None, :], o, mask=qmask)
        tl.store(plse_ptr + base + sp, tl.where(l_i > 0, m_i + tl.log2(l_safe), float("-inf")), mask=rmask)
        # The last split of this (sequence, KV head) to finish merges all splits by log-sum-exp and
        # resets the counter for the next launch.
        tl.debug_barrier()
        lock = cnt_ptr + b * tl.num_programs(1) + kvh
        arrived = tl.atomic_add(lock, 1, sem="acq_rel")
        if TRACE:  # the partial stored and counted; merged: whether this program merges
            trace_point(row, 2, arrived)
            tl.store(row + 4, tl.where(arrived == n_used - 1, 1, 0).to(tl.int64))
        if arrived == n_used - 1:
            tl.store(lock, 0)
            m_all = tl.full([GP], float("-inf"), dtype=tl.float32)
            den = tl.zeros([GP], dtype=tl.float32)
            num = tl.zeros([GP, DP], dtype=tl.float32)
            # MERGE splits per step, unrolled: their loads do not wait on each other's arithmetic.
            for s0 in range(0, n_used, MERGE):
                for j in tl.static_range(MERGE):
                    s = s0 + j
                    held = rmask & ((rows * 0 + s) < n_used)
                    lse_s = tl.load(plse_ptr + base + s, mask=held, other=float("-inf"), cache_modifier=".cg")
                    o_s = tl.load(po_ptr + (base + s)[:, None] * DP + offs_d[None, :],
                                  mask=held[:, None] & dmask[None, :], other=0.0, cache_modifier=".cg")  # fmt: skip
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
            if TRACE:
                trace_point(row, 3, tl.sum(den, 0).to(tl.int32, bitcast=True))
        elif TRACE:
            trace_point(row, 3, arrived)


# fmt: off
@triton.jit
def long_spans(  # type: ignore[no-untyped-def]  # a Triton JIT function: untyped pointers and constexprs
    sl_ptr, n_rows, n_kvh, span, n_fill, n_splits, chunk_floor, slots, long_ratio, long_piece, window,
    WINDOW: tl.constexpr, BLOCK_N: tl.constexpr, ROWS: tl.constexpr,
):
    # fmt: on
    """``(splits, floor)`` for a span of a launch whose grid holds more splits (``n_splits``) than filling the
    device needs (``n_fill``), from this launch's lengths: a span longer than ``long_ratio`` x the mean span of
    the non-empty rows may use every split, each at least ``long_piece`` x that mean over the splits per row that
    ``slots`` programs allow; any other span keeps ``n_fill`` splits and ``chunk_floor``. Equal lengths therefore
    split as a launch of ``n_fill`` splits, and a mixed batch no longer waits on its longest sequence walked by one
    program. Spans are approximated by the lengths (within a window where there is one)."""
    offs = tl.arange(0, ROWS)
    idx = tl.where(n_rows > ROWS, offs * n_rows // ROWS, offs)  # a batch of more than ROWS rows: a strided sample
    ln = tl.maximum(tl.load(sl_ptr + idx, mask=idx < n_rows, other=0).to(tl.float32), 0.0)
    if WINDOW:
        ln = tl.minimum(ln, window)
    seen = tl.sum(tl.where(ln > 0, 1.0, 0.0), 0)
    mean = tl.sum(ln, 0) / tl.maximum(seen, 1.0)
    rows = tl.maximum(seen * n_rows / tl.minimum(n_rows, ROWS), 1.0).to(tl.int32)  # non-empty rows of the batch
    per_row = tl.maximum(slots // (rows * n_kvh), 1)
    piece = tl.cdiv((long_piece * mean / per_row.to(tl.float32)).to(tl.int32), BLOCK_N)
    long = span.to(tl.float32) > long_ratio * mean
    return tl.where(long, n_splits, n_fill), tl.where(long, tl.maximum(piece * BLOCK_N, chunk_floor), chunk_floor)


# fmt: off
@triton.jit
def attend_new(  # type: ignore[no-untyped-def]  # a Triton JIT kernel: untyped pointers and constexprs
    acc, m_i, l_i, q, k_row, v_row, sk_d, sv_d, kc_base, vc_base, skb, skt, svb, svt, slot, own_rows, own_d,
    qk_scale, ks, vs, offs_d, dmask, BS: tl.constexpr, softcap2, SOFTCAP: tl.constexpr, KV_FP8: tl.constexpr,
    LIMIT: tl.constexpr, partner, cos, sin, ROPE: tl.constexpr,
):
    # fmt: on
    """Add the step's own token (``k_row``/``v_row`` of the key/value tensors) to the online-softmax state of
    the rows where ``own_rows`` holds, and store it at ``slot`` where ``own_d`` holds (fp8 caches: quantised
    with saturation, and the quantised value is the one attended to, as if read back; its value enters the
    state unscaled, as cache tiles do, for :func:`.triton_tiles.attend_span` multiplies by ``vs`` after). Its
    ALiBi bias is 0 (key position = query position) and a window always contains it. With ``ROPE`` the key is
    rotated first (:func:`rope_factors`)."""
    k = tl.load(k_row + offs_d * sk_d, mask=dmask, other=0.0)
    if ROPE:
        kp = tl.load(k_row + partner * sk_d, mask=dmask, other=0.0).to(tl.float32)
        k = (k.to(tl.float32) * cos + kp * sin).to(k_row.dtype.element_ty)
    v = tl.load(v_row + offs_d * sv_d, mask=dmask, other=0.0)
    if KV_FP8:
        k = quantize_fp8(k, ks, LIMIT).to(kc_base.dtype.element_ty)
        v = quantize_fp8(v, vs, LIMIT).to(vc_base.dtype.element_ty)
    smask = dmask & own_d
    blk = slot // BS
    off = slot % BS
    tl.store(kc_base + blk * skb + off * skt + offs_d, k, mask=smask)
    tl.store(vc_base + blk * svb + off * svt + offs_d, v, mask=smask)
    kf = k.to(q.dtype).to(tl.float32)
    vf = v.to(q.dtype).to(tl.float32)
    s = tl.sum(q.to(tl.float32) * kf[None, :], 1) * qk_scale
    if SOFTCAP:
        s = softcap2 * tanh_exp2(s / softcap2)
    s = tl.where(own_rows, s, float("-inf"))
    m_new = tl.maximum(m_i, s)
    m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.exp2(m_i - m_ref)
    p = tl.exp2(s - m_ref)
    # Rows that do not own the token add nothing, even where its value is not finite (padding rows' inputs).
    pv = tl.where(own_rows[:, None], p[:, None] * vf[None, :], 0.0)
    return acc * alpha[:, None] + pv, m_new, l_i * alpha + p


#: The decode kernel (:func:`decode_launch_args` gives its launch arguments).
decode_kernel = decode_kernel
