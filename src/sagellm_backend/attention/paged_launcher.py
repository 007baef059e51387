"""Repeated fused store+decode launches (:func:`.paged_triton.paged_decode_store`) with their arguments bound once
per layout: :class:`FusedDecodeLauncher`, used by :class:`~.wrapper.PagedAttentionWrapper` and by the decode fast
path of :class:`~.paged.PagedAttentionBackend`.

Imported lazily (it imports torch and Triton).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import torch

from ..errors import InvalidArgumentError
from ..kernels import triton_launch
from ..kernels.overlap import extent_bytes
from . import paged_triton
from .paged_triton import decode_launch_args
from .paged_workspace import DecodeWorkspace
from .triton_args import DecodeConfig
from .triton_kernels import decode_kernel

__all__ = ["FusedDecodeLauncher"]


class FusedDecodeLauncher:
    """Repeated :func:`.paged_triton.paged_decode_store` launches (a decode step's layers, and the next steps')
    whose arguments are bound once per layout (``kernels.triton_launch.BoundCache``): a later call with the same
    batch, dtypes, shapes, strides, aliasing, scale and options only swaps in its query, key, value, caches, output,
    plan tensors (block tables, lengths, slots), fp8 scales and RoPE cache. Calls that do not qualify (16-byte
    misaligned tensors, direct launches off) go through :func:`.paged_triton.paged_decode_store`'s path.
    """

    def __init__(self) -> None:
        self._cache = triton_launch.BoundCache(decode_kernel)

    def __len__(self) -> int:
        return len(self._cache)

    @staticmethod
    def enabled() -> bool:
        """Whether decode calls use the fused launch (:data:`.paged_triton.FUSED_DECODE`, read at every call)."""
        return paged_triton.FUSED_DECODE

    def __call__(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, k_cache: torch.Tensor,
        v_cache: torch.Tensor, out: torch.Tensor | None, block_tables: torch.Tensor, seq_lens: torch.Tensor,
        slot_mapping: torch.Tensor, scale: float, *, cfg: DecodeConfig | None = None,
        workspace: DecodeWorkspace | None = None, k_scale: torch.Tensor | None = None,
        v_scale: torch.Tensor | None = None, fixed: Hashable | None = None, checked: bool = False,
        rope: tuple[torch.Tensor, bool] | None = None, **variants: Any,
    ) -> torch.Tensor:  # fmt: skip
        """:func:`.paged_triton.paged_decode_store` (same arguments; the variants as keywords).

        ``fixed`` is the caller's promise (a wrapper that owns its plan tensors, a decode fast path that recorded
        them): every call with an equal ``fixed`` passes plan tensors of the same shapes, strides and dtypes, the
        same ``cfg``, ``scale`` and variants, scales of the same shapes and strides, key and value in the query's
        dtype and the value cache in the key cache's; the binding is then looked up without reading them.
        ``checked`` (with ``fixed``) promises more: ``out`` is None or contiguous and apart from the other tensors,
        query, key and value are contiguous, and ``fixed`` holds their shapes, dtype and device (``out``'s too) and the
        caches' shape, strides and dtype; the binding is then looked up by ``fixed`` and the stream alone (the aliasing
        of the tensors only where no binding made from distinct tensors exists). Without ``checked``, a given ``out``
        sharing memory with any other tensor of the launch (query, key, value, caches, plan tensors, scales, RoPE cache)
        is refused here (byte spans kept with the binding), before the launch.

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
            cfg: As :func:`.paged_triton.paged_decode`.
            workspace: As :func:`.paged_triton.paged_decode`.
            k_scale: As :func:`.paged_triton.paged_decode`.
            v_scale: As :func:`.paged_triton.paged_decode`.
            fixed: See above; None for a caller that cannot promise it.
            checked: See above.
            rope: As :class:`DecodeOptions`; its cache is a live tensor of the binding.
            **variants: ``sliding_window``, ``logits_soft_cap``, ``alibi_slopes``.

        Returns:
            ``out``.

        Raises:
            InvalidArgumentError: Without ``checked``, a given ``out`` that shares memory with another tensor of the
                launch (nothing is launched).
        """
        fresh = out is None
        if out is None:  # a checked call's query is contiguous: empty_like keeps that without being asked
            out = torch.empty_like(query) if checked else torch.empty_like(query, memory_format=torch.contiguous_format)
        live: tuple[torch.Tensor, ...] = (
            query, key, value, k_cache, v_cache, out, block_tables, seq_lens, slot_mapping,
        )  # fmt: skip
        if k_scale is not None and v_scale is not None:
            live = (*live, k_scale, v_scale)
        rope_key = None
        if rope is not None:
            cs, neox = rope
            live = (*live, cs)
            rope_key = (cs.shape, cs.stride(), cs.dtype, neox)
        # Ids of the workspace buffers and slopes a binding holds stay theirs while it lives.
        where = None  # the current device and stream, where read here (the bound launch then reads neither)
        if workspace is not None:
            ws: tuple[Any, ...] = (id(workspace.partial_out), id(workspace.partial_lse), id(workspace.counters))
        elif query.is_cuda:  # split buffers of its own: one binding per stream, none shared by a graph
            where = triton_launch.current_device_stream()
            ws = (where[1], torch.cuda.is_current_stream_capturing())
        else:
            ws = ()
        if fixed is not None and checked:  # a given out is contiguous, of the query's shape, dtype and device
            sig: tuple[Any, ...] = (fixed, ws, rope_key)
        else:
            per_call = (
                query.shape, query.dtype, query.device, k_cache.shape, k_cache.dtype, out.dtype, query.stride(),
                key.stride(), value.stride(), k_cache.stride(), v_cache.stride(), out.stride(),
            )  # fmt: skip
            if fixed is not None:
                sig = (fixed, checked, ws, rope_key, *per_call)
            else:
                sig = (
                    *per_call, ws, cfg, scale, *variants.items(), key.dtype, value.dtype, v_cache.dtype, rope_key,
                    *[(t.shape, t.stride(), t.dtype) for t in live[6:]],
                )  # fmt: skip
        token, found, ptrs = self._cache.find(sig, live)
        spans = None
        if not (fresh or checked):  # the caller's out: apart from the other tensors, by the byte spans of this layout
            spans = found.extra if found is not None else None
            if spans is None:
                spans = tuple(extent_bytes(t) for t in live)
                if found is not None:  # bound by a call that allocated its out
                    found.extra = spans
            _check_apart(ptrs, spans)
        if found is not None:
            found(live, ptrs, where)
            return out
        grid, args, kw = decode_launch_args(
            query, k_cache, v_cache, block_tables, seq_lens, scale, out, cfg=cfg, workspace=workspace,
            k_scale=k_scale, v_scale=v_scale, new=(key, value, slot_mapping), rope=rope, **variants,
        )  # fmt: skip
        made = self._cache.launch_new(token, grid, args, kw, live)
        if made is not None:
            made.extra = spans  # the key fixes every shape and stride, so the spans too (None: not computed)
        return out


#: The roles of a decode launch's live tensors, for :func:`_check_apart`'s message.
_ROLES = (
    "query", "key", "value", "key cache", "value cache", "out", "block tables", "key lengths", "slot mapping",
    "key scale", "value scale", "RoPE cache",
)  # fmt: skip


def _check_apart(ptrs: list[int], spans: tuple[int, ...]) -> None:
    """Raise unless the output (the sixth live tensor) shares no byte with any other live tensor.

    Args:
        ptrs: The live tensors' data pointers.
        spans: Their extents in bytes (:func:`...kernels.overlap.extent_bytes`).

    Raises:
        InvalidArgumentError: The output overlaps one of them.
    """
    p, e = ptrs[5], spans[5]
    end = p + e
    for i, q in enumerate(ptrs):
        if i != 5 and end > q and q + spans[i] > p and e and spans[i]:  # kernels.overlap.apart, inlined (per call)
            n = len(ptrs)  # 9 tensors, then the scales (11 or 12) and the RoPE cache (10 or 12)
            roles = _ROLES[:9] + (_ROLES[9:11] if n in (11, 12) else ()) + (_ROLES[11:] if n in (10, 12) else ())
            raise InvalidArgumentError(
                f"the decode's out must share no memory with the tensors the launch reads (query, key, value, "
                f"caches, plan, scales, RoPE cache); it overlaps the {roles[i]}. Pass a separate buffer."
            )
