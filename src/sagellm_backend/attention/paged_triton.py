"""Paged attention in Triton, the launches: K/V store into pages and decode with split-K (the kernels are in
:mod:`.triton_kernels`, the shared tile loop in :mod:`.triton_tiles`, launch arguments in :mod:`.triton_args`).

Caches are ``[num_blocks, block_size, Hkv, D]`` with D innermost, pages token- or head-major
(:func:`.validation.page_layout`) and any ``stride(0)``; every kernel takes the strides. Token ``n`` of a
sequence lives in page ``block_tables[b, n // block_size]`` at row ``n % block_size``; the tile loop gathers ``BLOCK_N``
tokens at a time through the block table, so ``BLOCK_N`` does not depend on the page size.

All query heads that share one KV head are rows of one program (padded to at least 16 rows for
``tl.dot``), so each KV page is read once per KV head. Softmax is online, in base 2, accumulated
in fp32. Decode splits each sequence's context into chunks when ``B * Hkv`` programs are too few
to fill the device, and with ``DecodeConfig.long_splits`` the spans of a batch much longer than its mean
length also where they fill it; the last chunk of a (sequence, KV head) to finish merges all chunks exactly by
their log-sum-exp, in the same launch. :func:`paged_decode_store` also stores each sequence's new token
in that launch and attends to it from the key/value tensors (:class:`FusedDecodeLauncher` repeats it with
bound arguments).

Imported lazily (it imports torch and triton); runs under ``TRITON_INTERPRET=1`` on CPU tensors.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import torch

from ..errors import InvalidArgumentError
from ..kernels.triton_launch import launch, next_power_of_2
from .triton_args import (
    DecodeConfig,
    decode_config,
    decode_splits,
    dot_mode,
    fp8_args,
    launch_dims,
    pad_dim,
    pdl_launch,
    rope_args,
    sm_count,
    split_counts,
    supports,
    value_convert,
    variant_args,
    wave_slots,
)
from .triton_kernels import decode_kernel, store_kv_kernel
from .triton_tiles import LOG2E
from .variants import PagedOptions

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .paged_workspace import DecodeWorkspace

__all__ = [
    "FUSED_DECODE",
    "DecodeConfig",
    "DecodeOptions",
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


#: Whether the paged backend's and the wrapper's decode calls store each sequence's new token inside the decode
#: launch (:func:`paged_decode_store`, one launch per layer) instead of ``store_kv`` then ``paged_decode`` (two).
#: On unless ``SAGELLM_FUSED_DECODE=0`` (read at import).
FUSED_DECODE = os.environ.get("SAGELLM_FUSED_DECODE", "1") != "0"

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


def store_kv(
    key: torch.Tensor, value: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor,
    *, k_scale: torch.Tensor | None = None, v_scale: torch.Tensor | None = None,
) -> None:  # fmt: skip
    """Write ``key[t]`` / ``value[t]`` into flat slot ``slot_mapping[t]`` of the caches (negative or past the
    cache's last slot = skip; no host sync, so a CUDA graph may capture it).

    Args:
        key: ``[T, Hkv, D]``.
        value: ``[T, Hkv, D]``.
        k_cache: ``[num_blocks, block_size, Hkv, D]``, D innermost (token- or head-major pages).
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
    launch(store_kv_kernel, (t,))(
        key, value, k_cache, v_cache, slot_mapping,
        key.stride(0), key.stride(1), key.stride(2), value.stride(0), value.stride(1), value.stride(2),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), k_cache.shape[0] * k_cache.shape[1],
        H=h, D=d, HP=next_power_of_2(h), DP=next_power_of_2(d), BS=k_cache.shape[1],
        **{k: v for k, v in fp8_args(key, k_scale, v_scale).items() if k != "KV_FP8"},
        QUANT=quant, LIMIT=float(torch.finfo(k_cache.dtype).max) if quant else 0.0,
        num_warps=4 if h * d >= 2048 else 1,
    )  # fmt: skip


def _pdl_kw(pdl: bool | None, device: torch.device) -> dict[str, bool]:
    """The ``PDL`` constexpr of a decode launch, with Triton's ``launch_pdl`` option where it is on."""
    on = pdl_launch(pdl, device)
    return {"PDL": True, "launch_pdl": True} if on else {"PDL": False}


class DecodeOptions(PagedOptions, total=False):
    """The keyword options of :func:`paged_decode`: :class:`~.variants.PagedOptions` and the launch's own.

    Attributes:
        cfg: Launch configuration (tuning and tests; default :func:`decode_config`).
        splits: Force this many context splits (default :func:`decode_splits`).
        workspace: Split buffers to use instead of fresh partials and the per-stream counters (see
            :class:`~.paged_workspace.DecodeWorkspace`); with it the call allocates nothing (``out`` given) and
            may be captured in a CUDA graph.
        rope: ``(cos_sin_cache [max_position, rot_dim], is_neox)``: rotate the query (and, in
            :func:`paged_decode_store`, the new key before it is stored and attended to) to position
            ``seq_lens - 1`` in the kernel, as ``rotary_embedding`` would before the call (checked by the caller:
            :func:`.wrapper_rope.check_rope`).
    """

    cfg: DecodeConfig | None
    splits: int | None
    workspace: DecodeWorkspace | None
    rope: tuple[torch.Tensor, bool] | None


def paged_decode(
    query: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
    seq_lens: torch.Tensor, scale: float, out: torch.Tensor | None = None, **options: Unpack[DecodeOptions],
) -> torch.Tensor:  # fmt: skip
    """One query token per sequence attending to its ``seq_lens[b]`` cached positions.

    Args:
        query: ``[B, Hq, D]``; ``Hq`` a multiple of the caches' ``Hkv``.
        k_cache: ``[num_blocks, block_size, Hkv, D]``.
        v_cache: Same shape as ``k_cache``.
        block_tables: int32/int64 ``[B, max_blocks]``.
        seq_lens: ``[B]`` visible key positions (``>= 1``).
        scale: Softmax scale (> 0).
        out: Optional ``[B, Hq, D]`` output in the query's dtype.
        **options: :class:`DecodeOptions`. With a window the loop starts at the window's first tile and the
            splits cover only ``sliding_window + BLOCK_N`` tokens.

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
    grid, args, kw = decode_launch_args(query, k_cache, v_cache, block_tables, seq_lens, scale, out, **options)
    launch(decode_kernel, grid)(*args, **kw)
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
    **options: Unpack[DecodeOptions],
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
        **options: :class:`DecodeOptions`, as :func:`paged_decode`.

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
    launch(decode_kernel, grid)(*args, **kw)
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
    rope: tuple[torch.Tensor, bool] | None = None,
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
        rope: ``(cos_sin_cache [max_position, rot_dim], is_neox)``, checked (:func:`.wrapper_rope.check_rope`):
            the query and the new key (``new`` required) are rotated to position ``seq_lens - 1`` in the kernel.

    Returns:
        ``(grid, args, kwargs)`` for ``launch(decode_kernel, grid)(*args, **kwargs)``.

    Raises:
        InvalidArgumentError: ``scale`` is not positive, or ``workspace`` is too small for this launch.
    """
    b, hq, d, bs, hkv, g = launch_dims("paged_decode", query, k_cache, scale)
    cfg = cfg or decode_config(d, query.dtype, g, kv_fp8=k_scale is not None and v_scale is not None)
    max_tokens = block_tables.shape[1] * bs
    if sliding_window is not None:
        max_tokens = min(max_tokens, sliding_window + cfg.block_n)
    sms = sm_count(query.device)
    n_fill, n_split = split_counts(b, hkv, max_tokens, sms, cfg) if splits is None else (splits, splits)
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
                f"padded to {dp}); size it with paged_workspace.decode_workspace() for the largest batch."
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
    f16 = bool(fp8["KV_FP8"]) and cfg.fp8_f16_dot and query.dtype == torch.bfloat16
    dot_f32 = dot_f32 and not f16  # the fp16 dots need no fp32 stand-in under the interpreter
    args = (
        query, k_cache, v_cache, block_tables, seq_lens, out, po, plse, cnt,
        query.stride(0), query.stride(1), query.stride(2), out.stride(0), out.stride(1), out.stride(2),
        block_tables.stride(0), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), scale * LOG2E, cfg.floor_tokens(),
    )  # fmt: skip
    kw: dict[str, Any] = {
        "G": g, "GP": pad_dim(g), "D": d, "DP": dp, "BS": bs, "BLOCK_N": cfg.block_n, "DIRECT": direct,
        "PREC": prec, "DOT_F32": dot_f32, **variant_args(query, sliding_window, logits_soft_cap, alibi_slopes),
        **fp8, "key_ptr": nk, "value_ptr": nv, "slot_ptr": ns, **new_kw,
        "LIMIT": float(torch.finfo(k_cache.dtype).max) if fp8["KV_FP8"] and new is not None else 0.0,
        "NEW": new is not None, "num_warps": cfg.num_warps, "num_stages": cfg.stages(n_split),
        "F16_DOT": f16, "EARLY_V": cfg.early_v, **rope_args(query, rope),
        "V_ASM": value_convert(cfg, k_cache.dtype, f16 or query.dtype == torch.float16, query.device),
        "MERGE": cfg.merge_width, **_pdl_kw(cfg.pdl, query.device), "n_fill": n_fill,
        "slots": wave_slots(sms, cfg), "long_ratio": cfg.long_ratio, "long_piece": cfg.long_piece,
        "LONG_ROWS": min(next_power_of_2(b), 128) if n_split > n_fill else 0,  # 0: no long splits
        "trace_ptr": None, "TRACE": False,
    }  # fmt: skip
    if cfg.maxnreg is not None:
        kw["maxnreg"] = cfg.maxnreg
    return (b, hkv, n_split), args, kw


#: :func:`paged_decode`, by the name the tuning scripts call it with an explicit ``cfg``.
paged_decode_with = paged_decode
