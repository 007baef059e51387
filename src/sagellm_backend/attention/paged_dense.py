"""Prefill on an empty cache: causal attention over the call's own contiguous K/V with torch's dense kernels.

When no sequence of a prefill has cached context (every ``cached_lens`` is 0) and the cache holds the
query's dtype, each sequence attends only to the K/V the call was given, which lie packed and contiguous
in ``key``/``value``: reading them back from scattered cache pages is wasted work. The paged backend then
stores the K/V with its ``store_kv`` op as usual and computes the attention here:

- ``batch``: every sequence has the same length: one ``scaled_dot_product_attention`` on
  ``[B, H, L, D]`` views of the packed tensors (no copy);
- ``runs``: runs of adjacent equal-length sequences: one such call per run (on CUDA at most
  :data:`CUDA_MAX_RUNS`).

On CUDA, for more runs, or head sizes that are not a multiple of 8 or exceed 256 (no fused kernel takes
them), :func:`dense_prefill` declines (returns None) and the paged prefill op runs: torch's one-call varlen
kernel (``torch.nn.attention.varlen``) is flash's, which on an H100 runs no faster than the Triton prefill
(docs/PERFORMANCE.md), while cuDNN's, the fast one, takes only a batch of equal lengths. GQA is passed to
the kernels as ``enable_gqa``: K/V heads are never repeated in memory (a torch without ``enable_gqa``
repeats them). On CUDA devices of compute capability 9.0 and later, cuDNN attention is tried first, then
flash, efficient and math (``sdpa_kernel(..., set_priority=True)``); elsewhere torch's default order.

New tokens see their own new K/V even where ``slot_mapping`` skips storing them (negative slots): the
paged op would read whatever the cache held at those positions instead.
"""

from __future__ import annotations

import functools
import inspect
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["CUDA_MAX_RUNS", "dense_prefill", "dense_prefill_applies", "equal_length_runs"]

#: Most SDPA calls (runs of equal-length sequences) a CUDA prefill makes before the paged op's one launch wins.
CUDA_MAX_RUNS = 4


def dense_prefill_applies(
    is_prefill: bool, cached_lens: list[int] | None, query: torch.Tensor, k_cache: torch.Tensor
) -> bool:
    """Whether a paged call may attend over its own K/V: a prefill with no cached context, cache in the query dtype.

    Args:
        is_prefill: The metadata's ``is_prefill``.
        cached_lens: The metadata's ``cached_lens`` (None or all zeros for an empty cache).
        query: The call's query.
        k_cache: The key cache.

    Returns:
        True when :func:`dense_prefill` computes what the paged prefill op would.
    """
    return is_prefill and not any(() if cached_lens is None else cached_lens) and k_cache.dtype == query.dtype


def equal_length_runs(lens: list[int]) -> list[tuple[int, int, int]]:
    """Maximal runs of adjacent sequences of equal (non-zero) length.

    Args:
        lens: Tokens per sequence, in packed order.

    Returns:
        ``(first_token, num_sequences, length)`` per run; zero-length sequences are left out.
    """
    runs: list[tuple[int, int, int]] = []
    start = 0
    for n in lens:
        if n:
            if runs and runs[-1][2] == n and runs[-1][0] + runs[-1][1] * n == start:
                first, count, _ = runs[-1]
                runs[-1] = (first, count + 1, n)
            else:
                runs.append((start, 1, n))
        start += n
    return runs


@functools.lru_cache(maxsize=16)
def _prefers_cudnn(index: int) -> bool:
    """Whether CUDA device ``index`` runs SDPA with cuDNN first (cc >= 9.0 and ``sdpa_kernel(set_priority=)``)."""
    import torch
    from torch.nn.attention import sdpa_kernel

    return (
        torch.cuda.get_device_capability(index) >= (9, 0)
        and "set_priority" in inspect.signature(sdpa_kernel).parameters
    )


def _backends(device: torch.device) -> list[Any] | None:
    """SDPA backends in priority order for ``device`` (None: torch's default dispatch)."""
    import torch

    if device.type != "cuda":
        return None
    if not _prefers_cudnn(torch.cuda.current_device() if device.index is None else device.index):
        return None
    from torch.nn.attention import SDPBackend

    return [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def _causal_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Causal SDPA of ``q [B, Hq, L, D]`` over ``k, v [B, Hkv, L, D]`` (GQA without repeated K/V where possible)."""
    import torch.nn.functional as F

    if q.shape[1] == k.shape[1]:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
    try:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=True)
    except TypeError:  # torch < 2.5 has no enable_gqa
        g = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)


def _run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, first: int, count: int, n: int, scale: float) -> Any:
    """Attention of ``count`` sequences of ``n`` tokens from packed row ``first``: ``[count*n, Hq, D]``."""
    rows = slice(first, first + count * n)

    def heads_first(x: torch.Tensor) -> torch.Tensor:
        return x[rows].view(count, n, x.shape[1], x.shape[2]).transpose(1, 2)

    out = _causal_sdpa(heads_first(q), heads_first(k), heads_first(v), scale)
    return out.transpose(1, 2).reshape(count * n, q.shape[1], q.shape[2])


def dense_prefill(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    seq_lens: list[int],
    scale: float,
) -> tuple[torch.Tensor, str] | None:
    """Causal attention of each packed sequence over its own new K/V (see the module doc), or None.

    Args:
        query: ``[T, Hq, D]`` packed by sequence, contiguous.
        key: ``[T, Hkv, D]``, contiguous.
        value: ``[T, Hkv, D]``, contiguous.
        seq_lens: Tokens per sequence (sum ``T``).
        scale: Softmax scale.

    Returns:
        ``([T, Hq, D] in the query's dtype, "batch" | "runs")``, or None when the paged prefill op should run
        instead (on CUDA: a head size no fused kernel takes, or more than :data:`CUDA_MAX_RUNS` runs).
    """
    from torch.nn.attention import sdpa_kernel

    runs = equal_length_runs(seq_lens)
    if not runs:
        return query.new_zeros(query.shape), "batch"
    on_cuda = query.device.type == "cuda"
    d = query.shape[2]
    if on_cuda and (d % 8 or d > 256 or len(runs) > CUDA_MAX_RUNS):  # see the module doc
        return None
    backends = _backends(query.device)
    if len(runs) == 1 and runs[0][0] == 0 and runs[0][1] * runs[0][2] == query.shape[0]:
        first, count, n = runs[0]
        if backends is None:
            return _run(query, key, value, first, count, n, scale), "batch"
        with sdpa_kernel(backends, set_priority=True):
            return _run(query, key, value, first, count, n, scale), "batch"
    out = query.new_zeros(query.shape)
    for first, count, n in runs:
        if backends is None:
            out[first : first + count * n] = _run(query, key, value, first, count, n, scale)
        else:
            with sdpa_kernel(backends, set_priority=True):
                out[first : first + count * n] = _run(query, key, value, first, count, n, scale)
    return out, "runs"
