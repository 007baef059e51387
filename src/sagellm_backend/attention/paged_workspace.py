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

__all__ = ["DecodeWorkspace"]


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
