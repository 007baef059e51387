"""The decode fast path of :class:`~.paged.PagedAttentionBackend`: what a checked decode call recorded
(:class:`FastDecode`, :func:`record_decode`), the O(1) tests a later call on the same metadata (the next layer of the
step) must pass to reuse it instead of checking again (:func:`same_call`, :func:`output_apart`), and the call itself
(:func:`fast_forward`), for plain, variant (window, soft cap, ALiBi) and fp8-cache backends alike.
"""

from __future__ import annotations

import itertools
from typing import Any, NamedTuple

from ..kernels.overlap import extent_bytes
from .base import AttentionMetadata
from .diagnostics import count_attention_call
from .paged_plan import PagedPlan, ident
from .validation import check_output

__all__ = [
    "FastDecode", "decode_step", "fast_forward", "md_key", "output_apart", "own_tensors", "record_decode", "same_call",
    "same_md",
]  # fmt: skip


class FastDecode(NamedTuple):
    """A checked decode call's properties; a later call on the same metadata that has all of them again (same
    shapes, dtypes, devices, cache geometry and dtype, scale argument, fp8 scale layout, lengths, metadata tensors
    and their versions, implementation chosen by the first call) reuses the plan, ops and diagnostics record
    instead of checking again. Only the backend that recorded it (``owner``), with the variants object and
    ``kv_cache_dtype`` it had then (``mode``), reuses it."""

    owner: object
    mode: tuple[Any, str]  # (the owner's variants object, its kv_cache_dtype) when recorded
    tensor: type
    q_shape: tuple[int, ...]
    kv_shape: tuple[int, ...]
    dtype: Any
    device: Any
    cache_shape: tuple[int, ...]
    cache_stride: tuple[int, ...]
    cache_dtype: Any  # the caches' dtype as passed (an fp8 dtype or torch.uint8 for fp8 caches)
    view: Any  # the fp8 dtype to view uint8 caches as, else None
    scale_layout: tuple[Any, ...] | None  # k_scale's shape and stride, v_scale's, their dtype, as passed; or None
    kw: dict[str, Any]  # the variants' op arguments (persistent: the ALiBi slopes live on the device)
    scale_arg: object
    scale: float
    md_key: tuple[Any, ...]
    plan: PagedPlan
    ops: Any
    record: dict[str, Any] | None
    launcher: Any = None  # paged_launcher.FusedDecodeLauncher for the Triton ops: the layers' bound launches
    fixed: int | None = None  # the launcher's ``fixed`` key: scale, q/k/cache layouts, plan layouts (interned)
    out_bytes: int = 0  # bytes of a contiguous result (the query's shape and dtype)
    cache_bytes: int = 0  # bytes each cache of this layout spans (kernels.overlap.extent_bytes)
    plan_spans: tuple[tuple[int, int], ...] = ()  # (address, bytes) of the plan's tensors and ALiBi slopes
    kv_bytes: int = 0  # bytes of a contiguous key (or value) of the call's shape and dtype
    scale_bytes: tuple[int, int] = (0, 0)  # bytes k_scale and v_scale of ``scale_layout`` span


def own_tensors(md: AttentionMetadata, tensor: type) -> tuple[Any, ...]:
    """The metadata's own block tables and slot mapping where they are tensors (the plan may hold copies of them; a
    caller's ``output`` must spare both).

    Args:
        md: The metadata.
        tensor: ``torch.Tensor``.

    Returns:
        Those of the two that are tensors.
    """
    return tuple(t for t in (md.block_tables, md.slot_mapping) if isinstance(t, tensor))


def record_decode(
    owner: Any, query: Any, key: Any, raw_cache: Any, k_cache: Any, raw_scales: tuple[Any, Any],
    scales: dict[str, Any], kw: dict[str, Any], md: AttentionMetadata, plan: PagedPlan, ops: Any, launcher: Any,
    s: float,
) -> FastDecode:  # fmt: skip
    """What a checked decode call (contiguous query, key and value) leaves for the later layers of its step.

    Args:
        owner: The backend (its ``variants`` and ``kv_cache_dtype`` are recorded with it).
        query: The call's query.
        key: Its key.
        raw_cache: The key cache as passed (its dtype is what later calls must pass).
        k_cache: The key cache as the kernels read it (fp8 caches viewed as their fp8 dtype).
        raw_scales: The call's ``k_scale`` and ``v_scale`` as passed (Nones for unquantised caches).
        scales: The checked ``k_scale``/``v_scale`` (empty for unquantised caches).
        kw: The variants' op arguments.
        md: The step's metadata.
        plan: The plan the call used.
        ops: The ops the call used.
        launcher: A ``FusedDecodeLauncher`` for ops with a fused decode, else None.
        s: The softmax scale the call used.

    Returns:
        The record (without the caller's ``scale`` argument and diagnostics record: ``_replace`` them in).
    """
    tensors = (plan.block_tables, plan.key_lens, plan.slot_mapping)
    ks, (rk, rv) = scales.get("k_scale"), raw_scales
    vsc = scales.get("v_scale")
    layout = None if ks is None or vsc is None else (ks.shape, ks.stride(), vsc.shape, vsc.stride())
    slopes = kw.get("alibi_slopes")
    fixed = _interned(
        "forward", s, tuple(query.shape), tuple(key.shape), query.dtype, query.device, tuple(k_cache.shape),
        tuple(k_cache.stride()), k_cache.dtype, *[(t.shape, t.stride(), t.dtype) for t in tensors], layout,
        tuple((n, ("tensor", id(v)) if isinstance(v, type(query)) else v) for n, v in kw.items()),
    )  # fmt: skip  # a tensor (the ALiBi slopes) by identity: a binding holds the one it was made with
    spans = tuple(
        (t.data_ptr(), extent_bytes(t))
        for t in (*tensors, *own_tensors(md, type(query)), *(() if slopes is None else (slopes,)))
    )
    return FastDecode(
        owner, (owner.variants, owner.kv_cache_dtype), type(query), tuple(query.shape), tuple(key.shape),
        query.dtype, query.device, tuple(raw_cache.shape), tuple(raw_cache.stride()), raw_cache.dtype,
        None if raw_cache.dtype == k_cache.dtype else k_cache.dtype,
        None if rk is None else (rk.shape, rk.stride(), rv.shape, rv.stride(), rk.dtype),
        kw, None, s, md_key(md), plan, ops, None, launcher, fixed, query.numel() * query.element_size(),
        extent_bytes(k_cache), spans, key.numel() * key.element_size(),
        (0, 0) if rk is None else (extent_bytes(rk), extent_bytes(rv)),
    )  # fmt: skip


_FIXED: dict[tuple[Any, ...], int] = {}
_FIXED_IDS = itertools.count()


def _interned(*key: Any) -> int:
    """One int per distinct ``key`` (hashed once here, not by every launch's lookup); never the same int for
    another key, also after the table starts over (at 4,096 keys)."""
    found = _FIXED.get(key)
    if found is None:
        if len(_FIXED) >= 4096:
            _FIXED.clear()
        found = _FIXED.setdefault(key, next(_FIXED_IDS))
    return found


def output_apart(f: FastDecode, out: Any, q: Any, k: Any, v: Any, kc: Any, vc: Any, ks: Any, vs: Any) -> bool:
    """Whether ``out`` is a result buffer the fast path may write into: contiguous, of the query's shape, dtype and
    device (``f``'s), requiring no grad, not an inference tensor, sharing no byte with the query, key, value, caches,
    fp8 scales (None where there are none) or plan tensors (whose spans ``f`` holds). O(1); when False,
    :func:`.validation.check_output` says why (an inference tensor passes it under ``torch.inference_mode``)."""
    t: Any = f.tensor
    if (
        not isinstance(out, t) or out.shape != f.q_shape or out.dtype != f.dtype or out.device != f.device
        or not out.is_contiguous() or out.requires_grad or out.is_inference()
    ):  # fmt: skip
        return False
    p, kv = out.data_ptr(), f.kv_bytes  # the extents of contiguous q, k, v (of f's shapes)
    end = p + f.out_bytes  # > p: the fast path records only calls with tokens
    spans = (
        (q.data_ptr(), f.out_bytes if q.is_contiguous() else extent_bytes(q)),
        (k.data_ptr(), kv if k.is_contiguous() else extent_bytes(k)),
        (v.data_ptr(), kv if v.is_contiguous() else extent_bytes(v)),
        (kc.data_ptr(), f.cache_bytes), (vc.data_ptr(), f.cache_bytes),
        *(() if ks is None else ((ks.data_ptr(), f.scale_bytes[0]), (vs.data_ptr(), f.scale_bytes[1]))),
        *f.plan_spans,
    )  # fmt: skip
    return not any(a < end and p < a + n for a, n in spans if n)  # kernels.overlap.apart, inlined


def md_key(md: AttentionMetadata) -> tuple[Any, ...]:
    """What a fast-path record keeps of the step's metadata: lengths, the tensors' identities and versions, sizes.

    Args:
        md: The metadata.

    Returns:
        The key (compare a later call's with :func:`same_md`).
    """
    return (
        md.is_prefill, list(md.seq_lens), list(() if md.context_lens is None else md.context_lens),
        ident(md.block_tables), ident(md.slot_mapping), md.block_size, md.num_kv_heads, md.head_dim, md.attn_type,
    )  # fmt: skip


def same_md(md: AttentionMetadata, key: tuple[Any, ...]) -> bool:
    """``md_key(md) == key``, without building the key (lists are compared as they are).

    Args:
        md: A call's metadata.
        key: :func:`md_key` of the metadata a record was made with.

    Returns:
        Whether they are equal.
    """
    seq, ctx = md.seq_lens, md.context_lens
    return bool(
        md.is_prefill == key[0] and (seq == key[1] if type(seq) is list else list(seq) == key[1])
        and (ctx == key[2] if type(ctx) is list else list(() if ctx is None else ctx) == key[2])
        and ident(md.block_tables) == key[3] and ident(md.slot_mapping) == key[4] and md.block_size == key[5]
        and md.num_kv_heads == key[6] and md.head_dim == key[7] and md.attn_type == key[8]
    )  # fmt: skip


def same_call(
    f: FastDecode, q: Any, k: Any, v: Any, md: AttentionMetadata, kv_cache: Any, scale: object, ks: Any, vs: Any
) -> bool:
    """Whether a call has every property ``f`` was checked with (O(1) attribute reads and one list compare);
    ``ks``/``vs`` are its ``k_scale``/``v_scale`` (None when not given)."""
    if not isinstance(kv_cache, (tuple, list)) or len(kv_cache) != 2:
        return False
    kc: Any = kv_cache[0]
    vc: Any = kv_cache[1]
    t: Any = f.tensor
    dt, dev, cdt = f.dtype, f.device, f.cache_dtype
    layout = f.scale_layout
    if layout is None:
        if ks is not None or vs is not None:
            return False
    elif not (
        isinstance(ks, t) and isinstance(vs, t) and ks.dtype == layout[4] and vs.dtype == layout[4]
        and ks.shape == layout[0] and ks.stride() == layout[1] and vs.shape == layout[2] and vs.stride() == layout[3]
        and ks.device == dev and vs.device == dev
    ):  # fmt: skip
        return False
    return (
        isinstance(q, t) and isinstance(k, t) and isinstance(v, t) and isinstance(kc, t) and isinstance(vc, t)
        and q.shape == f.q_shape and k.shape == f.kv_shape and v.shape == f.kv_shape
        and q.dtype == dt and k.dtype == dt and v.dtype == dt and kc.dtype == cdt and vc.dtype == cdt
        and q.device == dev and k.device == dev and v.device == dev and kc.device == dev and vc.device == dev
        and kc.shape == f.cache_shape and vc.shape == f.cache_shape
        and kc.stride() == f.cache_stride and vc.stride() == f.cache_stride
        and type(scale) is type(f.scale_arg) and scale == f.scale_arg
        and same_md(md, f.md_key)
    )  # fmt: skip


def decode_step(
    ops: Any, q: Any, k: Any, v: Any, k_cache: Any, v_cache: Any, plan: PagedPlan, scale: float, kw: dict[str, Any],
    out: Any = None, fused: bool = False,
) -> Any:  # fmt: skip
    """Store a decode step's new K/V and attend (into ``out``, checked, when given): one launch of the ops'
    ``paged_decode_store`` where ``fused``, else ``store_kv`` then ``paged_decode``.

    Args:
        ops: The op set.
        q: ``[B, Hq, D]`` contiguous.
        k: ``[B, Hkv, D]`` contiguous.
        v: Same as ``k``.
        k_cache: The key cache (fp8 caches viewed as their fp8 dtype).
        v_cache: The value cache.
        plan: The step's plan.
        scale: Softmax scale.
        kw: The variants' op arguments and fp8 scales.
        out: A result buffer, or None.
        fused: Whether to store and attend in one launch (the ops have ``paged_decode_store`` and
            ``paged_triton.FUSED_DECODE`` is on: the paged backend decides).

    Returns:
        ``[B, Hq, D]``.
    """
    if fused:
        return ops.paged_decode_store(
            q, k, v, k_cache, v_cache, plan.block_tables, plan.key_lens, plan.slot_mapping, scale, out, **kw
        )
    scales = {n: kw[n] for n in ("k_scale", "v_scale") if n in kw}
    ops.store_kv(k, v, k_cache, v_cache, plan.slot_mapping, **scales)
    return ops.paged_decode(q, k_cache, v_cache, plan.block_tables, plan.key_lens, scale, out, **kw)


def fast_forward(
    f: FastDecode, query: Any, key: Any, value: Any, md: AttentionMetadata, kv_cache: Any, ks: Any, vs: Any,
    output: Any,
) -> Any:  # fmt: skip
    """A decode call :func:`same_call` accepted: check ``output`` (where given), launch, count the call.

    Args:
        f: The record.
        query: ``[B, Hq, D]``.
        key: ``[B, Hkv, D]``.
        value: Same as ``key``.
        md: The step's metadata.
        kv_cache: ``(K, V)``.
        ks: ``k_scale`` (fp8 caches), else None.
        vs: ``v_scale``.
        output: The caller's result buffer, or None.

    Returns:
        ``[B, Hq, D]`` (``output`` when given).

    Raises:
        InvalidArgumentError: An ``output`` that is not contiguous or shares memory with what the call reads
            (and the other errors of :func:`.validation.check_output`); nothing is written.
    """
    k_cache, v_cache = kv_cache
    plan = f.plan
    q, k, v = query.contiguous(), key.contiguous(), value.contiguous()
    if output is not None and not output_apart(f, output, query, key, value, k_cache, v_cache, ks, vs):
        others = (
            plan.block_tables, plan.key_lens, plan.slot_mapping, *own_tensors(md, f.tensor), ks, vs,
            f.kw.get("alibi_slopes"),
        )  # fmt: skip
        check_output(output, query, key, value, kv_cache, others)  # raises, saying what is wrong
    if f.view is not None:
        k_cache, v_cache = k_cache.view(f.view), v_cache.view(f.view)
    sl = f.scale_layout
    if sl is not None and (len(sl[0]) != 1 or len(sl[2]) != 1):  # as kv_quant.check_scale passes them
        ks, vs = ks.reshape(-1), vs.reshape(-1)
    if f.launcher is not None:
        out = f.launcher(
            q, k, v, k_cache, v_cache, output, plan.block_tables, plan.key_lens, plan.slot_mapping, f.scale,
            k_scale=ks, v_scale=vs, fixed=f.fixed,
            checked=True,  # same_call: shapes, dtype, device, cache layout as in f.fixed; q, k, v contiguous
            **f.kw,
        )  # fmt: skip
    else:  # recorded without a launcher: the ops have no fused decode, or it was off
        kw = f.kw if ks is None else {**f.kw, "k_scale": ks, "v_scale": vs}
        out = decode_step(f.ops, q, k, v, k_cache, v_cache, plan, f.scale, kw, output)
    if f.record is not None:
        count_attention_call(f.record)
    return out
