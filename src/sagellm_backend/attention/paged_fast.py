"""The decode fast path of :class:`~.paged.PagedAttentionBackend`: what a checked decode call recorded
(:class:`FastDecode`) and the O(1) tests a later call on the same metadata (the next layer of the step) must pass
to reuse it instead of checking again.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..kernels.overlap import apart, extent_bytes
from .base import AttentionMetadata
from .paged_plan import PagedPlan, ident

__all__ = ["FastDecode", "md_key", "output_apart", "same_call", "same_md"]


class FastDecode(NamedTuple):
    """A checked decode call's properties; a later call on the same metadata that has all of them again (same
    shapes, dtypes, devices, cache geometry, scale argument, lengths, metadata tensors and their versions,
    implementation chosen by the first call) reuses the plan, ops and diagnostics record instead of checking
    again. Only a backend without variants over an unquantised cache records one, and only that backend
    (``owner``) reuses it."""

    owner: object
    tensor: type
    q_shape: tuple[int, ...]
    kv_shape: tuple[int, ...]
    dtype: Any
    device: Any
    cache_shape: tuple[int, ...]
    cache_stride: tuple[int, ...]
    scale_arg: object
    scale: float
    md_key: tuple[Any, ...]
    plan: PagedPlan
    ops: Any
    record: dict[str, Any] | None
    launcher: Any = None  # paged_launcher.FusedDecodeLauncher for the Triton ops: the layers' bound launches
    fixed: tuple[Any, ...] | None = None  # the launcher's ``fixed`` key: scale, q/k/cache layouts, plan layouts
    out_bytes: int = 0  # bytes of a contiguous result (the query's shape and dtype)
    cache_bytes: int = 0  # bytes each cache of this layout spans (kernels.overlap.extent_bytes)
    plan_spans: tuple[tuple[int, int], ...] = ()  # (address, bytes) of the plan's tensors, which the decode reads
    kv_bytes: int = 0  # bytes of a contiguous key (or value) of the call's shape and dtype


def output_apart(f: FastDecode, out: Any, q: Any, k: Any, v: Any, kc: Any, vc: Any) -> bool:
    """Whether ``out`` is a result buffer the fast path may write into: contiguous, of the query's shape, dtype and
    device (``f``'s), requiring no grad, not an inference tensor, sharing no byte with the query, key, value, caches
    or plan tensors (whose spans ``f`` holds). O(1); when False, :func:`.validation.check_output` says why (an
    inference tensor passes it under ``torch.inference_mode``)."""
    t: Any = f.tensor
    if (
        not isinstance(out, t) or out.shape != f.q_shape or out.dtype != f.dtype or out.device != f.device
        or not out.is_contiguous() or out.requires_grad or out.is_inference()
    ):  # fmt: skip
        return False
    p, e, kv = out.data_ptr(), f.out_bytes, f.kv_bytes  # the extents of contiguous q, k, v (of f's shapes)
    eq = e if q.is_contiguous() else extent_bytes(q)
    ek = kv if k.is_contiguous() else extent_bytes(k)
    ev = kv if v.is_contiguous() else extent_bytes(v)
    return (
        apart(p, e, q.data_ptr(), eq) and apart(p, e, k.data_ptr(), ek) and apart(p, e, v.data_ptr(), ev)
        and apart(p, e, kc.data_ptr(), f.cache_bytes) and apart(p, e, vc.data_ptr(), f.cache_bytes)
        and all(apart(p, e, a, n) for a, n in f.plan_spans)
    )  # fmt: skip


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


def same_call(f: FastDecode, q: Any, k: Any, v: Any, md: AttentionMetadata, kv_cache: Any, scale: object) -> bool:
    """Whether a call has every property ``f`` was checked with (O(1) attribute reads and one list compare)."""
    if not isinstance(kv_cache, (tuple, list)) or len(kv_cache) != 2:
        return False
    kc: Any = kv_cache[0]
    vc: Any = kv_cache[1]
    t: Any = f.tensor
    dt, dev = f.dtype, f.device
    return (
        isinstance(q, t) and isinstance(k, t) and isinstance(v, t) and isinstance(kc, t) and isinstance(vc, t)
        and q.shape == f.q_shape and k.shape == f.kv_shape and v.shape == f.kv_shape
        and q.dtype == dt and k.dtype == dt and v.dtype == dt and kc.dtype == dt and vc.dtype == dt
        and q.device == dev and k.device == dev and v.device == dev and kc.device == dev and vc.device == dev
        and kc.shape == f.cache_shape and vc.shape == f.cache_shape
        and kc.stride() == f.cache_stride and vc.stride() == f.cache_stride
        and type(scale) is type(f.scale_arg) and scale == f.scale_arg
        and same_md(md, f.md_key)
    )  # fmt: skip
