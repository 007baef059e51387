"""Caller-owned buffers of the Triton split decode, so a launch allocates nothing and shares no
process-wide state (what a CUDA graph needs).

The per-stream arrival counters ``paged_triton`` keeps for callers without a workspace are safe for eager
launches, but a graph captured on one stream and replayed on another would share a counter buffer with
the eager launches of the capture stream; a workspace belongs to its owner instead. Launches that use one
workspace must not overlap: run them on one stream (a graph's replay is one stream).

Imported lazily (it imports torch).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["DecodeWorkspace", "decode_workspace"]


@dataclass(frozen=True)
class DecodeWorkspace:
    """Split-decode buffers.

    Attributes:
        partial_out: fp32, at least ``B * Hq * splits * pad_dim(D)`` elements (per-split outputs).
        partial_lse: fp32, at least ``B * Hq * splits`` elements (per-split log2-sum-exp).
        counters: int32 zeros, at least ``B * Hkv`` elements; every launch leaves them zero again.
    """

    partial_out: torch.Tensor
    partial_lse: torch.Tensor
    counters: torch.Tensor


def decode_workspace(
    max_batch: int, num_heads: int, num_kv_heads: int, head_dim: int, max_tokens: int,
    dtypes: tuple[torch.dtype, ...], device: torch.device,
) -> DecodeWorkspace:  # fmt: skip
    """A workspace big enough for every default-configured ``paged_triton.paged_decode`` of up to
    ``max_batch`` sequences whose block tables cover ``max_tokens`` positions, with or without a sliding window.

    Args:
        max_batch: Largest batch.
        num_heads: Query heads.
        num_kv_heads: KV heads.
        head_dim: D.
        max_tokens: Block-table width x block size.
        dtypes: Query/cache dtypes it must serve.
        device: Where the buffers live.

    Returns:
        The workspace (partials uninitialised, counters zero).
    """
    from . import triton_args as pt  # CUDA only: imports triton

    sm = pt.sm_count(device)
    rows = 1
    for dtype in dtypes:
        for kv_fp8 in (False, True):
            cfg = pt.decode_config(head_dim, dtype, num_heads // num_kv_heads, kv_fp8=kv_fp8)
            for b in range(1, max_batch + 1):
                rows = max(rows, b * pt.split_limit(b, num_kv_heads, max_tokens, sm, cfg))  # any span <= max_tokens
    po = torch.empty(rows * num_heads * pt.pad_dim(head_dim), dtype=torch.float32, device=device)
    plse = torch.empty(rows * num_heads, dtype=torch.float32, device=device)
    cnt = torch.zeros(max_batch * num_kv_heads, dtype=torch.int32, device=device)
    return DecodeWorkspace(po, plse, cnt)
