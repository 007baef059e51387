"""Paged attention: the backend writes the new tokens' K/V into a block cache and attends through block tables.

Ops: the highest-priority implementation of :mod:`.registry` that supports the call: ``paged_triton``
(Triton kernels) for CUDA tensors whose geometry fits, else ``paged_torch`` (vectorised torch, any device).
``SAGELLM_PAGED_ATTENTION_IMPL=torch|triton|auto`` forces one (read by every checked call: a decode step's later
layers, on its fast path, keep the first layer's choice); a forced one that cannot serve the call is an
error. Diagnostics key the calls ``"paged:implementation=<ops>"``; prefills on an empty cache that attend
over their own K/V (:mod:`.paged_dense`) ``"paged:implementation=dense_<batch|runs>"``; calls without a cache
or block tables run the SDPA semantics and are keyed ``"paged:sdpa_fallback/<path>"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from ..errors import InvalidArgumentTypeError, UnsupportedOperationError
from .base import AttentionMetadata, check_device, positive_int, reject_unknown_options
from .checked import AttentionCall, CheckedAttentionBackend
from .kv_quant import canonical_kv_cache_dtype, check_scales, fp8_dtype
from .paged_dense import dense_prefill, dense_prefill_applies
from .paged_fast import decode_step, fast_forward, record_decode, same_call
from .paged_plan import plan_paged_call
from .registry import AttentionRequest, select_impl
from .sdpa import sdpa_attention
from .validation import check_kv_cache, check_mask
from .variants import AttentionVariants

if TYPE_CHECKING:
    import torch

__all__ = ["PagedAttentionBackend", "select_paged_ops"]


def select_paged_ops(
    device: torch.device,
    dtype: torch.dtype,
    head_dim: int,
    block_size: int,
    *,
    kv_cache_dtype: str = "auto",
    variants: frozenset[str] = frozenset(),
) -> tuple[Any, str]:
    """The op set serving a paged call: the highest-priority row of
    :data:`~sagellm_backend.attention.registry.ATTENTION_IMPLS` for backend ``paged`` that supports it
    (``SAGELLM_PAGED_ATTENTION_IMPL=torch|triton`` forces one, which must then support the call).

    Args:
        device: The tensors' device.
        dtype: The query dtype.
        head_dim: Head dimension.
        block_size: Cache block size.
        kv_cache_dtype: The cache's ``kv_cache_dtype``.
        variants: The variants in use.

    Returns:
        ``(ops, implementation_name)``: an object with ``store_kv``, ``paged_decode``, ``paged_prefill``.

    Raises:
        InvalidArgumentError: The environment variable names no implementation.
        UnsupportedOperationError: No implementation (or not the forced one) supports the call; the message
            says what each supports.
    """
    index = None
    if kv_cache_dtype != "auto" and device.type == "cuda":  # fp8 support depends on the card the tensors are on
        import torch

        index = device.index if device.index is not None else torch.cuda.current_device()
    request = AttentionRequest(
        device.type, str(dtype).removeprefix("torch."), head_dim, block_size, kv_cache_dtype, variants, index
    )
    impl = select_impl("paged", request)
    return impl.load_ops(), impl.name


class PagedAttentionBackend(CheckedAttentionBackend):
    """Attention over a paged KV cache ``(K, V)``, each ``[num_blocks, block_size, Hkv, D]``.

    ``forward`` validates everything (tensors, cache, metadata, block ids, slots) before it writes the new
    tokens' K/V at ``slot_mapping``; then prefill runs causal attention over each sequence's pages (cached
    context included: ``cached_lens``), decode attends to positions ``0..context_lens[i]``. GQA/MQA read each
    KV head once for its group of query heads.

    Args:
        block_size: Default tokens per block (the cache passed to ``forward`` decides).
        device: Informational only (the tensors decide where it runs).
        use_vllm_kernel: The engine's request for the fastest kernels; both values select the same way (the
            highest-priority implementation that supports the call: Triton on CUDA). There is no vLLM
            dependency; the value is kept as :attr:`use_vllm_kernel`.
        sliding_window: Each query sees itself and the ``sliding_window - 1`` keys before it; only the window's
            pages are read.
        logits_soft_cap: Scores become ``cap * tanh(score / cap)`` (None or 0: no cap).
        alibi_slopes: ``[num_heads]`` ALiBi slopes: ``slope[h] * (key_pos - query_pos)`` is added to the scores.
            The variants are defined in :mod:`.reference`; a call with a cache runs them in the Triton and the
            torch ops; without a cache (SDPA semantics) a variant is an ``UnsupportedOperationError``.
        kv_cache_dtype: ``"auto"`` (the cache has the query's dtype), or ``"fp8_e4m3"`` (``"fp8"``) /
            ``"fp8_e5m2"``: caches of that torch fp8 dtype (or ``torch.uint8`` bits); ``forward`` then needs
            ``k_scale`` and ``v_scale`` (:mod:`.kv_quant`), stores quantised with saturation and reads
            dequantised.
        **unknown: Anything else is refused (typed error naming the accepted options).

    Raises:
        InvalidArgumentTypeError: ``block_size`` is not an int, ``device`` not a str/torch.device,
            ``use_vllm_kernel`` not a bool, a variant or ``kv_cache_dtype`` of the wrong type, or an unknown
            option.
        InvalidArgumentError: ``block_size`` is not positive, a variant's value is out of range, or an unknown
            ``kv_cache_dtype``.
    """

    def __init__(
        self,
        block_size: int = 16,
        *,
        device: torch.device | str | None = None,
        use_vllm_kernel: bool = False,
        sliding_window: int | None = None,
        logits_soft_cap: float | None = None,
        alibi_slopes: torch.Tensor | Sequence[float] | None = None,
        kv_cache_dtype: str = "auto",
        **unknown: object,
    ) -> None:
        reject_unknown_options(PagedAttentionBackend.__init__, unknown)
        self.block_size = positive_int("block_size", block_size)
        if device is not None:
            check_device(device)
        if not isinstance(use_vllm_kernel, bool):
            raise InvalidArgumentTypeError(f"use_vllm_kernel must be a bool; got {type(use_vllm_kernel).__name__}.")
        self.device = device
        self.use_vllm_kernel = use_vllm_kernel
        self.variants = AttentionVariants(sliding_window, logits_soft_cap, alibi_slopes)
        self.kv_cache_dtype = canonical_kv_cache_dtype(kv_cache_dtype)
        self._launcher: Any = None  # paged_launcher.FusedDecodeLauncher of the decode fast path, made on first use

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
        k_scale: torch.Tensor | None = None,
        v_scale: torch.Tensor | None = None,
        output: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """:meth:`CheckedAttentionBackend.forward`. A decode call identical in every checked property to an
        earlier call on the same metadata (the next layer of the step) skips the checks and only launches; its
        ``output``, where given, is still checked (contiguous, the query's shape, dtype and device, apart from the
        inputs and caches) before anything is written.

        Args:
            query: ``[T, Hq, D]``.
            key: ``[T, Hkv, D]``.
            value: ``[T, Hkv, D]``.
            attn_metadata: The step's metadata.
            kv_cache: ``(K, V)`` caches.
            scale: Softmax scale (default ``D ** -0.5``).
            attn_mask: Optional HF mask.
            k_scale: Key scales of an fp8 KV cache (``kv_cache_dtype="fp8*"`` only).
            v_scale: Value scales of an fp8 KV cache.
            output: Optional result buffer (vLLM's ``output``): the decode writes into it, other paths copy into it.

        Returns:
            ``[T, Hq, D]`` in the query's dtype (``output`` when given).

        Raises:
            InvalidArgumentTypeError: Wrong argument types.
            InvalidArgumentError: Shapes, lengths or slots that do not fit; an ``output`` that is not contiguous or
                shares memory with the inputs or caches.
            InvalidBlockError: Block tables too narrow or naming blocks outside the cache.
            UnsupportedDTypeError: Mixed or non-float dtypes.
            InvalidDeviceError: Tensors on different devices.
        """
        fast = attn_metadata.step_fast_paths if isinstance(attn_metadata, AttentionMetadata) else None
        f = None if fast is None else fast.get((id(self), "ready"))
        if (
            f is not None and f.owner is self and attn_mask is None
            and f.mode[0] is self.variants and f.mode[1] == self.kv_cache_dtype
            and same_call(f, query, key, value, attn_metadata, kv_cache, scale, k_scale, v_scale)
        ):  # fmt: skip
            out: torch.Tensor = fast_forward(f, query, key, value, attn_metadata, kv_cache, k_scale, v_scale, output)
            return out
        out, record = self._checked_forward(
            query, key, value, attn_metadata, kv_cache, scale, attn_mask, k_scale=k_scale, v_scale=v_scale,
            output=output,
        )  # fmt: skip
        fast = attn_metadata.step_fast_paths
        pending = fast.pop((id(self), "pending"), None)  # left by this call's _attend
        if pending is not None and pending.owner is self:  # the call succeeded: later layers may reuse it
            fast[(id(self), "ready")] = pending._replace(scale_arg=scale, record=record)
        return out

    @property
    def supports_paged_attention(self) -> bool:
        """True."""
        return True

    def implementation_for(self, device: torch.device, dtype: torch.dtype, head_dim: int, block_size: int) -> str:
        """Name of the ops (``"triton"`` or ``"torch"``) that ``forward`` would use: the second item of
        :func:`select_paged_ops` for the same arguments and this backend's variants (documented there)."""
        return select_paged_ops(
            device, dtype, head_dim, block_size, kv_cache_dtype=self.kv_cache_dtype, variants=self.variants.names
        )[1]

    def _caches(self, call: AttentionCall) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """The checked caches (fp8 caches viewed as their fp8 dtype) and the ops' scale arguments."""
        hkv, dev = call.shape.num_kv_heads, call.query.device
        scales = check_scales(self.kv_cache_dtype, call.k_scale, call.v_scale, hkv, dev)
        if self.kv_cache_dtype == "auto":
            k_cache, v_cache = check_kv_cache(call.kv_cache, call.key)
            return k_cache, v_cache, {}
        import torch

        fp8 = fp8_dtype(self.kv_cache_dtype)
        k_cache, v_cache = check_kv_cache(call.kv_cache, call.key, (fp8, torch.uint8))
        return k_cache.view(fp8), v_cache.view(fp8), scales

    def _attend(self, call: AttentionCall) -> tuple[torch.Tensor, str]:
        """Store the new K/V in the cache and attend through the block tables.

        A padded prefill (``T != sum(seq_lens)``) needs the bool HF ``attn_mask`` ``[B, 1, q, kv]`` to find
        the real tokens; padding rows return zeros. Decode ignores ``attn_mask`` (``context_lens`` decide).
        Without ``kv_cache`` or ``block_tables`` the call has the SDPA backend's semantics (no variants).

        Args:
            call: The call; ``kv_cache`` is ``(K, V)`` of :meth:`get_kv_cache_shape`, in the query's dtype and
                device.

        Returns:
            ``([T, Hq, D] in the query's dtype, path name)``.

        Raises:
            InvalidArgumentError: Shapes, lengths, slots or block sizes that do not fit.
            InvalidBlockError: Block tables too narrow or naming blocks outside the cache.
            UnsupportedOperationError: A non-causal ``attn_type`` with a cache; variants without a cache; no
                implementation supports the call (the message says what each supports).
            InvalidArgumentTypeError: ``k_scale``/``v_scale`` missing for an fp8 cache, or given for another.
        """
        query, key, value, md, shp, s, attn_mask, kv_cache, *_ = call
        mask = None if attn_mask is None else check_mask(attn_mask, query, shp.num_heads)
        if kv_cache is None or md.block_tables is None:
            needs = sorted(self.variants.names) + ([] if self.kv_cache_dtype == "auto" else ["kv_cache_dtype"])
            if needs or call.k_scale is not None or call.v_scale is not None:
                raise UnsupportedOperationError(
                    f"{needs or ['k_scale/v_scale']} need the paged path: pass kv_cache and metadata with block_tables."
                )
            res, path = sdpa_attention(query, key, value, md, s, mask)
            return res, f"sdpa_fallback/{path}"
        k_cache, v_cache, store_kw = self._caches(call)
        plan = plan_paged_call(md, shp, k_cache, query.device, mask)
        bs = int(k_cache.shape[1])
        ops, impl = select_paged_ops(
            query.device,
            query.dtype,
            shp.head_dim,
            bs,
            kv_cache_dtype=self.kv_cache_dtype,
            variants=self.variants.names,
        )
        variant_kw = self.variants.op_kwargs(shp.num_heads, query.device)
        kw = {**variant_kw, **store_kw}
        q, k, v = query, key, value
        if plan.token_index is not None:
            q, k, v = (t.index_select(0, plan.token_index) for t in (query, key, value))
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        out: torch.Tensor
        dense = None
        md.step_fast_paths.pop((id(self), "ready"), None)
        md.step_fast_paths.pop((id(self), "pending"), None)
        if plan.tokens and not md.is_prefill:
            into = call.output if plan.token_index is None else None  # padded rows: the result is scattered after
            fused = _fused_decode(ops)
            out = decode_step(ops, q, k, v, k_cache, v_cache, plan, s, kw, into, fused)
            if mask is None and plan.token_index is None:  # forward keeps it once the call succeeded
                launcher = None
                if fused:
                    if self._launcher is None:  # one per backend: its bindings serve every later step
                        from .paged_launcher import FusedDecodeLauncher

                        self._launcher = FusedDecodeLauncher()
                    launcher = self._launcher
                md.step_fast_paths[(id(self), "pending")] = record_decode(
                    self, query, key, cast(Any, call.kv_cache)[0], k_cache, (call.k_scale, call.v_scale), store_kw,
                    variant_kw, md, plan, ops, launcher, s,
                )  # fmt: skip
        elif plan.tokens:
            ops.store_kv(k, v, k_cache, v_cache, plan.slot_mapping, **store_kw)
            if not self.variants.names and dense_prefill_applies(md.is_prefill, md.cached_lens, q, k_cache):
                dense = dense_prefill(q, k, v, md.seq_lens, s)  # see paged_dense
            if dense is not None:
                out, impl = dense[0], f"dense_{dense[1]}"
            else:
                out = ops.paged_prefill(
                    q, k_cache, v_cache, plan.block_tables, plan.cu_seqlens_q, plan.key_lens, s, **kw
                )
        else:
            out = q.new_empty(q.shape)
        if plan.token_index is not None:
            full = query.new_zeros(query.shape)
            full.index_copy_(0, plan.token_index, out)
            out = full
        return out, f"implementation={impl}"


def _fused_decode(ops: Any) -> bool:
    """Whether decode calls on ``ops`` use its fused ``paged_decode_store`` (``paged_triton.FUSED_DECODE``)."""
    if getattr(ops, "paged_decode_store", None) is None:
        return False
    from . import paged_triton  # only the Triton ops have a fused decode

    return paged_triton.FUSED_DECODE
