"""Argument validation shared by every path: counts, block ids, timeouts, byte sizes."""

from __future__ import annotations

import math
import os

from ..errors import InvalidArgumentError, InvalidArgumentTypeError

__all__ = ["check_count", "check_timeout", "fmt_bytes", "host_memory_total"]


def fmt_bytes(n: int) -> str:
    """Human-readable byte count (``"2.75 MiB"``).

    Args:
        n: Bytes.

    Returns:
        The formatted size.
    """
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.2f} {unit}"
        size /= 1024
    return f"{size:.2f} GiB"


def host_memory_total() -> int:
    """Physical memory of this machine in bytes (no psutil needed).

    Returns:
        Bytes of RAM.
    """
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # non-POSIX
        import psutil

        return int(psutil.virtual_memory().total)


def check_count(name: str, value: object, *, minimum: int = 1) -> int:
    """Validate a count argument (an ``int``, not a ``bool``, at least ``minimum``).

    Args:
        name: Argument name for the message.
        value: What the caller passed.
        minimum: Smallest allowed value.

    Returns:
        The value.

    Raises:
        InvalidArgumentTypeError: not an int.
        InvalidArgumentError: below ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        if hasattr(value, "__index__") and not isinstance(value, bool):
            try:
                return check_count(name, value.__index__(), minimum=minimum)  # numpy ints
            except TypeError:
                pass
        raise InvalidArgumentTypeError(
            f"{name} must be an int; got {type(value).__name__} {value!r}. Pass a whole number."
        )
    if value < minimum:
        raise InvalidArgumentError(
            f"{name} must be >= {minimum}; got {value}. Pass a positive count.", argument=name, value=value
        )
    return value


def check_timeout(name: str, value: object) -> float:
    """Validate a timeout in seconds: a finite, positive real number.

    Args:
        name: Argument name for the message.
        value: What the caller passed.

    Returns:
        The timeout as a float.

    Raises:
        InvalidArgumentTypeError: not a number.
        InvalidArgumentError: not finite or not positive.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgumentTypeError(f"{name} must be a number of seconds; got {type(value).__name__} {value!r}.")
    t = float(value)
    if not math.isfinite(t) or t <= 0:
        raise InvalidArgumentError(f"{name} must be a finite number of seconds > 0; got {value!r}.")
    return t
