"""Batched row copies with torch indexing: the portable path of every torch device mover."""

from __future__ import annotations

from typing import Any

__all__ = ["index_copy_rows"]


def index_copy_rows(src: Any, src_ids: Any, dst: Any, dst_ids: Any) -> None:
    """``dst[dst_ids[k]] = src[src_ids[k]]`` with torch indexing (ids ``None``: rows 0..n-1).

    Args:
        src: Source tensor (rows along dim 0).
        src_ids: Row ids, or ``None``.
        dst: Destination tensor.
        dst_ids: Row ids, or ``None``.
    """
    import torch

    n = len(src_ids) if src_ids is not None else len(dst_ids)
    dev = dst.device

    def index(ids: Any) -> Any:
        return (
            ids.to(dev, torch.int64)
            if isinstance(ids, torch.Tensor)
            else torch.tensor(ids, dtype=torch.int64, device=dev)
        )

    s_rows = src.reshape(src.shape[0], -1)
    d_rows = dst.reshape(dst.shape[0], -1)
    if src_ids is None:
        d_rows.index_copy_(0, index(dst_ids), s_rows[:n])
    elif dst_ids is None:
        torch.index_select(s_rows, 0, index(src_ids), out=d_rows[:n])
    else:
        d_rows.index_copy_(0, index(dst_ids), s_rows.index_select(0, index(src_ids)))
