"""One-launch scattered row copy on CUDA, written in Triton.

``dst[dst_idx[r]] = src[src_idx[r]]`` for every row ``r``, rows viewed as 64-bit words. Each
program copies one ``BLOCK``-word chunk of one row, so a 64 KiB block is ``8192 / BLOCK``
programs; loads and stores are 16-byte vectors per thread. Pairs run in the caller's order.
Either index may be the identity (gather into / scatter from a contiguous staging buffer), chosen
at compile time; destination indices may follow the source ones in one packed tensor
(``dst_off``); rows whose indices fall outside either tensor are skipped (trusted indices never
read or write out of bounds). Design measurements are in docs/PERFORMANCE.md.

Imported only by the CUDA block mover when Triton is importable; it falls back to
``index_select`` + ``index_copy_`` otherwise.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import triton
import triton.language as tl

from ..kernels.triton_launch import cdiv, next_power_of_2

__all__ = ["copy_rows_triton", "copy_words", "kernel_config", "word_view"]


@triton.jit(do_not_specialize=["src_rows", "dst_rows", "dst_off"])
def _copy_rows_kernel(  # type: ignore[no-untyped-def]  # a Triton JIT kernel: untyped pointers and constexprs
    src_ptr,
    dst_ptr,
    src_idx_ptr,
    dst_idx_ptr,
    row_words,
    src_rows,
    dst_rows,
    dst_off,
    BLOCK: tl.constexpr,
    CHUNKS: tl.constexpr,
    SRC_IDX: tl.constexpr,
    DST_IDX: tl.constexpr,
):
    pid = tl.program_id(0)
    r = pid // CHUNKS
    c = pid % CHUNKS
    if SRC_IDX:  # noqa: SIM108 (compile-time branch in a Triton kernel)
        s = tl.load(src_idx_ptr + r).to(tl.int64)
    else:
        s = r.to(tl.int64)
    if DST_IDX:  # noqa: SIM108
        d = tl.load(dst_idx_ptr + dst_off + r).to(tl.int64)
    else:
        d = r.to(tl.int64)
    offs = c * BLOCK + tl.arange(0, BLOCK)
    inside = (s >= 0) & (s < src_rows) & (d >= 0) & (d < dst_rows)  # trusted indices: never out of bounds
    mask = offs < tl.where(inside, row_words, 0)
    v = tl.load(src_ptr + s * row_words + offs, mask=mask)
    tl.store(dst_ptr + d * row_words + offs, v, mask=mask)


_BLOCK = int(os.environ.get("SAGELLM_COPY_BLOCK", "2048"))
_WARPS = int(os.environ.get("SAGELLM_COPY_WARPS", "8"))
# Compiled kernels by everything their specialisation depends on, launched directly
# (CompiledKernel[grid](...)) to skip the JIT launcher's per-call argument binding. Any failure
# switches this off for the process and the normal launch is used.
_FAST: dict[tuple[Any, ...], Any] = {}
_fast_launch = os.environ.get("SAGELLM_TRITON_FAST_LAUNCH", "1") != "0"


def kernel_config() -> tuple[int, int]:
    """(BLOCK words per program, warps per program), read from ``SAGELLM_COPY_BLOCK`` /
    ``SAGELLM_COPY_WARPS`` at import; the defaults were the best of bench/tune_copy.py's sweep on
    an H100 (see docs/PERFORMANCE.md).

    Returns:
        The configuration.
    """
    return _BLOCK, _WARPS


def word_view(t: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``t`` as rows of the widest machine words that divide a row (int64 where possible).

    Args:
        t: Contiguous tensor, dim 0 indexing rows.

    Returns:
        ``(view, words_per_row)``.
    """
    rows = t.reshape(t.shape[0], -1)
    row_bytes = rows.shape[1] * rows.element_size()
    for dt, size in ((torch.int64, 8), (torch.int32, 4), (torch.int16, 2), (torch.uint8, 1)):
        if row_bytes % size == 0:
            return rows.view(torch.uint8).view(dt), row_bytes // size
    raise AssertionError("unreachable")


def copy_rows_triton(
    src: torch.Tensor,
    src_idx: torch.Tensor | None,
    dst: torch.Tensor,
    dst_idx: torch.Tensor | None,
    n_rows: int,
    block: int | None = None,
    warps: int | None = None,
) -> None:
    """Launch the copy on the current stream.

    Args:
        src: Source rows (contiguous, dim 0 indexes rows).
        src_idx: int32/int64 device tensor of source rows, or ``None`` for ``0..n_rows-1``.
        dst: Destination rows, same row size and dtype as ``src``.
        dst_idx: Destination row indices, or ``None``.
        n_rows: Rows to copy.
        block: Words per program (default :func:`kernel_config`).
        warps: Warps per program.
    """
    if n_rows == 0:
        return
    s, words = word_view(src)
    d, words_d = word_view(dst)
    if words != words_d or s.dtype != d.dtype:
        raise ValueError(f"row sizes differ: {words} vs {words_d} words")
    copy_words(s, src_idx, d, dst_idx, n_rows, words, block, warps)


def copy_words(
    s: torch.Tensor,
    src_idx: torch.Tensor | None,
    d: torch.Tensor,
    dst_idx: torch.Tensor | None,
    n_rows: int,
    words: int,
    block: int | None = None,
    warps: int | None = None,
    dst_off: int = 0,
) -> None:
    """Launch on views from :func:`word_view` (callers cache those for arenas).

    Args:
        s: Source word view.
        src_idx: Source row indices or ``None``.
        d: Destination word view.
        dst_idx: Destination row indices or ``None``.
        n_rows: Rows to copy.
        words: Words per row.
        block: Words per program.
        warps: Warps per program.
        dst_off: Destination indices start at ``dst_idx[dst_off]`` (both lists in one staged tensor).
    """
    global _fast_launch
    b = min(block or _BLOCK, next_power_of_2(words))
    w = warps or _WARPS
    chunks = cdiv(words, b)
    si = src_idx if src_idx is not None else s
    di = dst_idx if dst_idx is not None else s
    grid = (n_rows * chunks, 1, 1)  # the direct launch of a compiled kernel needs all three dims
    meta = (b, chunks, src_idx is not None, dst_idx is not None)
    key = None
    if _fast_launch:
        key = (
            meta,
            w,
            s.dtype,
            si.dtype,
            di.dtype,
            s.device.index,
            words % 16 == 0,
            s.data_ptr() % 16 == 0,
            d.data_ptr() % 16 == 0,
            si.data_ptr() % 16 == 0,
            di.data_ptr() % 16 == 0,
        )
        compiled = _FAST.get(key)
        if compiled is not None:
            try:
                compiled[grid](s, d, si, di, words, s.shape[0], d.shape[0], dst_off, *meta)
                return
            except Exception:  # an API change in this Triton: use the documented launch from now on
                _fast_launch = False
    compiled = _copy_rows_kernel[grid](
        s,
        d,
        si,
        di,
        words,
        s.shape[0],
        d.shape[0],
        dst_off,
        BLOCK=b,
        CHUNKS=chunks,
        SRC_IDX=meta[2],
        DST_IDX=meta[3],
        num_warps=w,
    )
    if key is not None and compiled is not None and hasattr(compiled, "__getitem__"):
        _FAST[key] = compiled
