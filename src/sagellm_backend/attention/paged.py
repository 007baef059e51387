"""Paged attention: the backend writes the new tokens' K/V into a block cache and attends through block tables.

Ops: ``paged_triton`` (Triton kernels) for CUDA tensors when Triton imports and the shape fits, else
``paged_torch`` (vectorised torch, any device). ``SAGELLM_PAGED_ATTENTION_IMPL=torch|triton|auto`` overrides
the choice (``triton`` still needs a CUDA tensor and an importable Triton). Diagnostics key the calls
``"paged:implementation=<ops>"``; calls without a cache or block tables run the SDPA semantics and are keyed
``"paged:sdpa_fallback/<path>"``.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, NamedTuple

from .base import AttentionMetadata, check_device, positive_int
from .checked import AttentionCall, CheckedAttentionBackend
from .diagnostics import count_attention_call
from .paged_plan import PagedPlan, ident, plan_paged_call
from .sdpa import sdpa_attention
from .validation import check_kv_cache, check_mask

if TYPE_CHECKING:
    import torch

__all__ = ["PagedAttentionBackend", "select_paged_ops"]

_LOG = logging.getLogger(__name__)
_TRITON: list[Any] = []  # [op namespace or None] once probed
_TRITON_LOCK = threading.Lock()
_TRITON_DTYPES = ("float16", "bfloat16", "float32")


def _load_triton_ops() -> Any:
    """Triton ops: store_kv and paged_decode of paged_triton; paged_prefill from it or paged_triton_prefill.

    Raises ImportError when Triton or an op is missing.
    """
    paged_triton = importlib.import_module(".paged_triton", __package__)
    prefill = getattr(paged_triton, "paged_prefill", None)
    if prefill is None:
        prefill = importlib.import_module(".paged_triton_prefill", __package__).paged_prefill
    ops = SimpleNamespace(
        store_kv=getattr(paged_triton, "store_kv", None),
        paged_decode=getattr(paged_triton, "paged_decode", None),
        paged_prefill=prefill,
        supports=getattr(paged_triton, "supports", None),
    )
    if ops.store_kv is None or ops.paged_decode is None:
        raise ImportError("paged_triton lacks store_kv or paged_decode")
    return ops


def _triton_ops() -> Any:
    """The Triton op set if it imports, else None; probed once per process."""
    with _TRITON_LOCK:
        if not _TRITON:
            try:
                _TRITON.append(_load_triton_ops())
            except ImportError:
                _TRITON.append(None)
            except Exception as exc:  # a broken Triton install must not break attention: use the torch ops
                _LOG.warning(
                    "paged attention: Triton ops failed to load (%s: %s); using torch ops", type(exc).__name__, exc
                )
                _TRITON.append(None)
        return _TRITON[0]


def _pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def select_paged_ops(device: torch.device, dtype: torch.dtype, head_dim: int, block_size: int) -> tuple[Any, str]:
    """Pick the op module for tensors of ``device``/``dtype`` and the cache geometry.

    Triton is used for CUDA tensors of fp16/bf16/fp32 with power-of-two ``head_dim`` (16..256) and
    ``block_size`` (>= 8), unless the environment says ``SAGELLM_PAGED_ATTENTION_IMPL=torch``; a
    ``paged_triton.supports(head_dim=, block_size=, dtype=)`` hook, if present, has the last word.

    Args:
        device: The tensors' device.
        dtype: The query/cache dtype.
        head_dim: Head dimension.
        block_size: Cache block size.

    Returns:
        ``(ops, implementation_name)``: an object with ``store_kv``, ``paged_decode``, ``paged_prefill``, and
        ``"triton"`` or ``"torch"``.
    """
    from . import paged_torch

    choice = os.environ.get("SAGELLM_PAGED_ATTENTION_IMPL", "auto").strip().lower()
    if choice != "torch" and device.type == "cuda":
        fits = str(dtype).removeprefix("torch.") in _TRITON_DTYPES and _pow2(head_dim) and 16 <= head_dim <= 256
        fits = fits and _pow2(block_size) and block_size >= 8
        ops = _triton_ops() if fits or choice == "triton" else None
        if ops is not None:
            hook = ops.supports
            if hook is None or hook(head_dim=head_dim, block_size=block_size, dtype=dtype):
                return ops, "triton"
    return paged_torch, "torch"


class _FastDecode(NamedTuple):
    """A checked decode call's properties; a later call on the same metadata that has all of them again (same
    shapes, dtypes, devices, cache geometry, scale argument, lengths, metadata tensors and their versions,
    implementation choice) reuses the plan, ops and diagnostics record instead of checking again."""

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
    impl_env: str | None
    plan: PagedPlan
    ops: Any
    record: dict[str, Any] | None


def _md_key(md: AttentionMetadata) -> tuple[Any, ...]:
    return (
        md.is_prefill, list(md.seq_lens), list(md.context_lens or ()), ident(md.block_tables), ident(md.slot_mapping),
        md.block_size, md.num_kv_heads, md.head_dim, md.attn_type,
    )  # fmt: skip


def _same_call(f: _FastDecode, q: Any, k: Any, v: Any, md: AttentionMetadata, kv_cache: Any, scale: object) -> bool:
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
        and os.environ.get("SAGELLM_PAGED_ATTENTION_IMPL") == f.impl_env
        and _md_key(md) == f.md_key
    )  # fmt: skip


class PagedAttentionBackend(CheckedAttentionBackend):
    """Attention over a paged KV cache ``(K, V)``, each ``[num_blocks, block_size, Hkv, D]``.

    ``forward`` validates everything (tensors, cache, metadata, block ids, slots) before it writes the new
    tokens' K/V at ``slot_mapping``; then prefill runs causal attention over each sequence's pages (cached
    context included: ``cached_lens``), decode attends to positions ``0..context_lens[i]``. GQA/MQA read each
    KV head once for its group of query heads.

    Args:
        block_size: Default tokens per block (the cache passed to ``forward`` decides).
        device: Informational only (the tensors decide where it runs).
        use_vllm_kernel: Accepted for the engine's call and ignored: this backend never needs vLLM.
        **ignored: Other engine options, accepted and ignored.

    Raises:
        InvalidArgumentTypeError: ``block_size`` is not an int, or ``device`` not a str/torch.device.
        InvalidArgumentError: ``block_size`` is not positive.
    """

    def __init__(
        self,
        block_size: int = 16,
        *,
        device: torch.device | str | None = None,
        use_vllm_kernel: bool = False,
        **ignored: Any,
    ) -> None:
        self.block_size = positive_int("block_size", block_size)
        if device is not None:
            check_device(device)
        self.device = device
        self.use_vllm_kernel = bool(use_vllm_kernel)  # ignored: our own ops serve every device
        self.ignored_options = sorted(ignored)

    @property
    def name(self) -> str:
        """``"paged"``."""
        return "paged"

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attn_metadata: AttentionMetadata,
        *,
        kv_cache: tuple[torch.Tensor, torch.Tensor] | None = None,
        scale: float | None = None,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """:meth:`CheckedAttentionBackend.forward`. A decode call identical in every checked property to an
        earlier call on the same metadata (the next layer of the step) skips the checks and only launches.

        Args:
            query: ``[T, Hq, D]``.
            key: ``[T, Hkv, D]``.
            value: ``[T, Hkv, D]``.
            attn_metadata: The step's metadata.
            kv_cache: ``(K, V)`` caches.
            scale: Softmax scale (default ``D ** -0.5``).
            attn_mask: Optional HF mask.

        Returns:
            ``[T, Hq, D]`` in the query's dtype.

        Raises:
            InvalidArgumentTypeError: Wrong argument types.
            InvalidArgumentError: Shapes, lengths or slots that do not fit.
            InvalidBlockError: Block tables too narrow or naming blocks outside the cache.
            UnsupportedDTypeError: Mixed or non-float dtypes.
            InvalidDeviceError: Tensors on different devices.
        """
        f = getattr(attn_metadata, "_fast", None)
        if f is not None and attn_mask is None and _same_call(f, query, key, value, attn_metadata, kv_cache, scale):
            assert kv_cache is not None  # _same_call checked the pair
            k_cache, v_cache = kv_cache
            plan = f.plan
            f.ops.store_kv(key.contiguous(), value.contiguous(), k_cache, v_cache, plan.slot_mapping)
            out: torch.Tensor = f.ops.paged_decode(
                query.contiguous(), k_cache, v_cache, plan.block_tables, plan.key_lens, f.scale
            )
            if f.record is not None:
                count_attention_call(f.record)
            return out
        out, record = self._checked_forward(query, key, value, attn_metadata, kv_cache, scale, attn_mask)
        f = attn_metadata._fast
        if f is not None and f.record is None:  # set by this call's _attend
            attn_metadata._fast = f._replace(scale_arg=scale, record=record)
        return out

    @property
    def supports_paged_attention(self) -> bool:
        """True."""
        return True

    def implementation_for(self, device: torch.device, dtype: torch.dtype, head_dim: int, block_size: int) -> str:
        """Name of the ops (``"triton"`` or ``"torch"``) that ``forward`` would use: the second item of
        :func:`select_paged_ops` for the same arguments (documented there)."""
        return select_paged_ops(device, dtype, head_dim, block_size)[1]

    def _attend(self, call: AttentionCall) -> tuple[torch.Tensor, str]:
        """Store the new K/V in the cache and attend through the block tables.

        A padded prefill (``T != sum(seq_lens)``) needs the bool HF ``attn_mask`` ``[B, 1, q, kv]`` to find
        the real tokens; padding rows return zeros. Decode ignores ``attn_mask`` (``context_lens`` decide).
        Without ``kv_cache`` or ``block_tables`` the call has the SDPA backend's semantics.

        Args:
            call: The call; ``kv_cache`` is ``(K, V)`` of :meth:`get_kv_cache_shape`, in the query's dtype and
                device.

        Returns:
            ``([T, Hq, D] in the query's dtype, path name)``.

        Raises:
            InvalidArgumentError: Shapes, lengths, slots or block sizes that do not fit.
            InvalidBlockError: Block tables too narrow or naming blocks outside the cache.
            UnsupportedOperationError: A non-causal ``attn_type`` with a cache.
        """
        query, key, value, md, shp, s, attn_mask, kv_cache = call
        mask = None if attn_mask is None else check_mask(attn_mask, query, shp.num_heads)
        if kv_cache is None or md.block_tables is None:
            res, path = sdpa_attention(query, key, value, md, s, mask)
            return res, f"sdpa_fallback/{path}"
        k_cache, v_cache = check_kv_cache(kv_cache, key)
        plan = plan_paged_call(md, shp, k_cache, query.device, mask)
        ops, impl = select_paged_ops(query.device, query.dtype, shp.head_dim, int(k_cache.shape[1]))
        q, k, v = query, key, value
        if plan.token_index is not None:
            q, k, v = (t.index_select(0, plan.token_index) for t in (query, key, value))
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        out: torch.Tensor
        md._fast = None
        if not md.is_prefill and mask is None and plan.token_index is None and plan.tokens:
            md._fast = _FastDecode(
                type(query), tuple(query.shape), tuple(key.shape), query.dtype, query.device, tuple(k_cache.shape),
                tuple(k_cache.stride()), None, s, _md_key(md), os.environ.get("SAGELLM_PAGED_ATTENTION_IMPL"),
                plan, ops, None,
            )  # fmt: skip
        if plan.tokens:
            ops.store_kv(k, v, k_cache, v_cache, plan.slot_mapping)
            if md.is_prefill:
                out = ops.paged_prefill(q, k_cache, v_cache, plan.block_tables, plan.cu_seqlens_q, plan.key_lens, s)
            else:
                out = ops.paged_decode(q, k_cache, v_cache, plan.block_tables, plan.key_lens, s)
        else:
            out = q.new_empty(q.shape)
        if plan.token_index is not None:
            full = query.new_zeros(query.shape)
            full.index_copy_(0, plan.token_index, out)
            out = full
        return out, f"implementation={impl}"
