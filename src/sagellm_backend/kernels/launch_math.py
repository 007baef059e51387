"""Integer helpers of launch geometry (grids, tile sizes) without Triton's call cost: ``triton.cdiv`` and
``triton.next_power_of_2`` are constexpr functions, microseconds per call from Python. No imports.
"""

from __future__ import annotations

__all__ = ["cdiv", "next_power_of_2"]


def cdiv(a: int, b: int) -> int:
    """``ceil(a / b)`` for ints (``triton.cdiv`` is a constexpr function: microseconds per call from Python).

    Args:
        a: Dividend.
        b: Divisor (> 0).

    Returns:
        The rounded-up quotient.
    """
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """The smallest power of two ``>= n`` (1 for ``n <= 1``), as ``triton.next_power_of_2`` without its call cost.

    Args:
        n: Size.

    Returns:
        The power of two.
    """
    return 1 if n <= 1 else 1 << (n - 1).bit_length()
