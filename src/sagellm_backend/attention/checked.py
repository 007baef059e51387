"""The ``forward`` the built-in attention backends share: validate the call, attend, count it."""

from __future__ import annotations

from abc import abstractmethod
from typing import TYPE_CHECKING, Any, NamedTuple

from .base import AttentionBackend, AttentionMetadata
from .diagnostics import record_attention_call
from .validation import QKVShape, check_metadata, check_output, check_qkv, resolve_scale

if TYPE_CHECKING:
    import torch

__all__ = ["AttentionCall", "CheckedAttentionBackend"]


class AttentionCall(NamedTuple):
    """One ``forward`` call: tensors, metadata and scale checked; mask and cache as the caller passed them."""

    query: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    metadata: AttentionMetadata
    shape: QKVShape
    scale: float
    attn_mask: object
    kv_cache: object
    k_scale: object = None
    v_scale: object = None
    output: torch.Tensor | None = None  # checked by :func:`.validation.check_output`


class CheckedAttentionBackend(AttentionBackend):
    """An attention backend whose :meth:`forward` checks the metadata, the q/k/v tensors and the scale,
    runs :meth:`_attend`, and records the call in :mod:`~sagellm_backend.attention.diagnostics` under
    ``"<name>:<path>"``. Nothing is recorded for a call that raises."""

    def forward(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_metadata: AttentionMetadata, *,
        kv_cache: tuple[torch.Tensor, torch.Tensor] | None = None, scale: float | None = None,
        attn_mask: torch.Tensor | None = None, k_scale: torch.Tensor | None = None, v_scale: torch.Tensor | None = None,
        output: torch.Tensor | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """:meth:`AttentionBackend.forward`; what each backend does with the cache and mask is :meth:`_attend`'s.

        Args:
            query: ``[T, Hq, D]``.
            key: ``[T, Hkv, D]``.
            value: ``[T, Hkv, D]``.
            attn_metadata: The step's metadata.
            kv_cache: ``(K, V)`` caches, for paged backends.
            scale: Softmax scale (default ``D ** -0.5``).
            attn_mask: Optional HF mask.
            k_scale: Key scales of an fp8 KV cache (backends built with ``kv_cache_dtype="fp8*"`` only).
            v_scale: Value scales of an fp8 KV cache.
            output: Optional result buffer (:meth:`AttentionBackend.forward`), checked before anything is written.

        Returns:
            ``[T, Hq, D]`` in the query's dtype (``output`` when given).

        Raises:
            InvalidArgumentTypeError: Wrong argument types.
            InvalidArgumentError: Shapes or lengths that do not fit; an ``output`` that is not contiguous or shares
                memory with the inputs or the caches.
            UnsupportedDTypeError: Mixed or non-float dtypes.
            InvalidDeviceError: Tensors on different devices.
        """
        return self._checked_forward(
            query, key, value, attn_metadata, kv_cache, scale, attn_mask, k_scale=k_scale, v_scale=v_scale,
            output=output,
        )[0]  # fmt: skip

    def _checked_forward(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_metadata: AttentionMetadata,
        kv_cache: tuple[torch.Tensor, torch.Tensor] | None, scale: float | None, attn_mask: torch.Tensor | None,
        *, k_scale: torch.Tensor | None = None, v_scale: torch.Tensor | None = None, output: object = None,
    ) -> tuple[torch.Tensor, dict[str, Any] | None]:  # fmt: skip
        """:meth:`forward`'s work; also returns the diagnostics record counted (None if dropped)."""
        md = check_metadata(attn_metadata)
        shp = check_qkv(query, key, value)
        s = resolve_scale(scale, shp.head_dim)
        extra = (md.block_tables, md.slot_mapping, attn_mask, k_scale, v_scale)
        buf = None if output is None else check_output(output, query, key, value, kv_cache, extra)
        call = AttentionCall(query, key, value, md, shp, s, attn_mask, kv_cache, k_scale, v_scale, buf)
        out, path = self._attend(call)
        if buf is not None and out is not buf:  # a backend that computed a new tensor
            out = buf.copy_(out)
        record = record_attention_call(
            backend_name=self.name, path_name=path, is_prefill=md.is_prefill, query_shape=tuple(query.shape),
            key_shape=tuple(key.shape), value_shape=tuple(value.shape), has_kv_cache=kv_cache is not None,
            has_block_tables=md.block_tables is not None, has_context_lens=md.context_lens is not None,
            num_seqs=md.num_seqs, query_tokens=shp.tokens,
            max_context_len=0 if md.context_lens is None else int(max(md.context_lens, default=0)),
            max_blocks_per_seq=0 if md.block_tables is None else int(md.block_tables.shape[1]),
        )  # fmt: skip
        return out, record

    @abstractmethod
    def _attend(self, call: AttentionCall) -> tuple[torch.Tensor, str]:
        """Check the rest of ``call`` (mask, cache) and compute the attention.

        Args:
            call: The call.

        Returns:
            ``([T, Hq, D] in the query's dtype, path name for the diagnostics)``.
        """
