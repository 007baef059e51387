"""Byte-range arithmetic of tensor layouts, for the checks of caller-owned results (``out=``, in place): whether a
layout gives two elements one address, the bytes a tensor spans, and whether two tensors' spans intersect.

No torch or numpy import: tensors are read through their ``shape``, ``stride()``, ``element_size()``, ``numel()``,
``data_ptr()`` and ``device``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["apart", "extent_bytes", "shares_memory", "strides_overlap"]


def strides_overlap(shape: tuple[int, ...], strides: tuple[int, ...]) -> bool:
    """Whether a layout may give two elements one address (conservative: dimensions ordered by stride must each
    step past everything the smaller ones reach).

    Args:
        shape: Sizes.
        strides: Strides, in elements.

    Returns:
        True when two elements may share memory (a stride of 0 over a dimension of 2 or more, for one).
    """
    reach = 1
    for st, n in sorted((abs(st), n) for n, st in zip(shape, strides) if n > 1):
        if st < reach:
            return True
        reach += st * (n - 1)
    return False


def extent_bytes(t: Any) -> int:
    """Bytes from ``t``'s first element to the end of its last (0 for no elements): ``[data_ptr, data_ptr + extent)``
    holds every element, whatever the strides.

    Args:
        t: A tensor.

    Returns:
        The extent in bytes.
    """
    n: int = t.numel()
    if n == 0:
        return 0
    if t.is_contiguous():
        return n * int(t.element_size())
    reach: int = 1 + sum((n - 1) * abs(s) for n, s in zip(t.shape, t.stride()))
    return reach * int(t.element_size())


def apart(p: int, e: int, q: int, f: int) -> bool:
    """Whether byte ranges ``[p, p + e)`` and ``[q, q + f)`` do not intersect.

    Args:
        p: Start of the first.
        e: Its length.
        q: Start of the second.
        f: Its length.

    Returns:
        True when they share no byte (an empty range shares none).
    """
    return e == 0 or f == 0 or p >= q + f or q >= p + e


def shares_memory(a: Any, b: Any) -> bool:
    """Whether the byte ranges of ``a`` and ``b`` intersect on one device.

    Args:
        a: A tensor.
        b: Another.

    Returns:
        True when they may share memory (address ranges intersect); False when they cannot.
    """
    if a.device != b.device:
        return False
    return not apart(a.data_ptr(), extent_bytes(a), b.data_ptr(), extent_bytes(b))
