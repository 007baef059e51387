"""Conformance check of the paged ops' variants (sliding window, soft cap, ALiBi) against the float64 reference.

The op interface is described in :mod:`.testing`. Torch is imported inside the functions.
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING, Any

from .op_check_common import OpCheckResult, PagedGeometry, graded, paged_pages
from .reference import reference_paged_decode, reference_paged_prefill

if TYPE_CHECKING:
    import torch
    from typing_extensions import Unpack

__all__ = ["check_paged_variants"]


def _poison_below(
    kc: torch.Tensor, vc: torch.Tensor, table: torch.Tensor, firsts: list[int], block_size: int, tile: int
) -> None:
    """NaN into each sequence's pages that lie wholly before ``firsts[i]`` rounded down to ``tile`` tokens."""
    import torch

    for i, first in enumerate(firsts):
        pages = table[i, : (first // tile) * tile // block_size].to(device=kc.device, dtype=torch.int64)
        kc[pages] = math.nan
        vc[pages] = math.nan


def check_paged_variants(
    ops: Any,
    device: torch.device | str,
    *,
    seq_lens: list[int],
    q_lens: list[int],
    sliding_window: int | None = None,
    logits_soft_cap: float | None = None,
    alibi: bool = False,
    seed: int = 0,
    tolerances: dict[str, tuple[float, float]] | None = None,
    window_tile: int = 128,
    **geometry: Unpack[PagedGeometry],
) -> list[OpCheckResult]:
    """Check ``paged_decode`` and ``paged_prefill`` with the variants against the float64 reference.

    With ``sliding_window``, the pages wholly before each window's first ``window_tile``-aligned token are
    filled with NaN before the op runs (the reference reads clean copies), so an op that reads outside the
    window returns NaN and fails.

    Args:
        ops: The op module.
        device: Device of every tensor.
        seq_lens: Key positions per sequence (decode: the query is the last; prefill: the last ``q_lens``).
        q_lens: Prefill queries per sequence, each ``1 <= q_lens[i] <= seq_lens[i]`` (the rest is cached context).
        sliding_window: Window, or None.
        logits_soft_cap: Soft cap, or None.
        alibi: Use random ALiBi slopes in ``[0, 1)``.
        seed: Random seed.
        tolerances: Overrides of :data:`DEFAULT_TOLERANCES`.
        window_tile: Alignment of the first window token an op may read from.
        **geometry: The case's shape (:class:`PagedGeometry`).

    Returns:
        The decode and the prefill results.

    Raises:
        AssertionError: Wrong dtype/shape, non-finite values, or outside tolerance.
        TypeError: A missing or unknown geometry key.
    """
    import torch

    if set(geometry) != PagedGeometry.__required_keys__:
        raise TypeError(f"geometry keys {sorted(geometry)}; expected {sorted(PagedGeometry.__required_keys__)}")
    dtype, head_dim, block_size, num_heads = (
        geometry["dtype"],
        geometry["head_dim"],
        geometry["block_size"],
        geometry["num_heads"],
    )
    g = torch.Generator().manual_seed(seed)
    arena, kc, vc, table = paged_pages(seq_lens, geometry, device, g)
    clean = arena.clone()
    slopes = torch.rand(num_heads, generator=g) if alibi else None
    ref_kw: dict[str, Any] = {
        "sliding_window": sliding_window, "logits_soft_cap": logits_soft_cap, "alibi_slopes": slopes,
    }  # fmt: skip
    op_kw = {k: v for k, v in ref_kw.items() if v is not None}
    if slopes is not None:
        op_kw["alibi_slopes"] = slopes.to(device)
    s = head_dim**-0.5
    lens = torch.tensor(seq_lens, dtype=torch.int64)
    cu = torch.tensor([0, *itertools.accumulate(q_lens)], dtype=torch.int64)
    qd = torch.randn(len(seq_lens), num_heads, head_dim, generator=g).to(dtype=dtype, device=device)
    qp = torch.randn(sum(q_lens), num_heads, head_dim, generator=g).to(dtype=dtype, device=device)
    ref_d = reference_paged_decode(qd, kc, vc, table, lens, s, **ref_kw)
    ref_p = reference_paged_prefill(qp, kc, vc, table, cu, lens, s, **ref_kw)
    dev = [t.to(device) for t in (table, lens, cu)]
    case = {
        **geometry, "dtype": str(dtype), "seq_lens": seq_lens, "q_lens": q_lens, "sliding_window": sliding_window,
        "logits_soft_cap": logits_soft_cap, "alibi": alibi,
    }  # fmt: skip
    if sliding_window is not None:
        _poison_below(kc, vc, table, [max(0, n - sliding_window) for n in seq_lens], block_size, window_tile)
    out_d = ops.paged_decode(qd, kc, vc, dev[0], dev[1], s, **op_kw)
    arena.copy_(clean)
    if sliding_window is not None:
        firsts = [max(0, n - q - sliding_window + 1) for n, q in zip(seq_lens, q_lens)]
        _poison_below(kc, vc, table, firsts, block_size, window_tile)
    out_p = ops.paged_prefill(qp, kc, vc, dev[0], dev[2], dev[1], s, **op_kw)
    return [
        graded("paged_decode", case, out_d, ref_d, dtype, tolerances),
        graded("paged_prefill", case, out_p, ref_p, dtype, tolerances),
    ]
