"""Argument validation shared by every path: counts, block ids, timeouts, byte sizes, bytes-like data;
and the bounded waits built on the ``timeout`` rule (deadlines, polling, the timeout error)."""

from __future__ import annotations

import math
import operator
import os
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from ..errors import InvalidArgumentError, InvalidArgumentTypeError, StreamTimeoutError

_T = TypeVar("_T")

__all__ = [
    "Deadline",
    "byte_view",
    "check_count",
    "check_instance",
    "check_timeout",
    "exact_int",
    "fmt_bytes",
    "host_memory_total",
    "poll_until",
]


def fmt_bytes(n: int) -> str:
    """Human-readable byte count (``"2.75 MiB"``).

    Args:
        n: Bytes.

    Returns:
        The formatted size.
    """
    if abs(n) >= 1 << 80:  # beyond any memory (and beyond float for absurd requests)
        return f"about 2**{abs(n).bit_length() - 1} B"
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


def exact_int(value: object) -> int | None:
    """``value`` as an exact integer, or ``None`` when it is not one. Never raises.

    Accepted: ``int`` (not ``bool``), numpy integers, 0-d integer arrays and tensors, and objects
    implementing ``__index__``. Refused: bools of every library, floats, strings, arrays or
    tensors with more than zero dimensions (``operator.index`` takes a one-element tensor), and
    objects whose ``__index__`` raises anything.

    Args:
        value: What the caller passed.

    Returns:
        The int, or ``None``.
    """
    if type(value) is int:
        return value
    if isinstance(value, bool):
        return None
    if isinstance(value, int):  # a subclass (IntEnum ...): its int value, whatever its __int__ does
        return int.__index__(value)
    try:
        dtype = getattr(value, "dtype", None)
        if dtype is not None and hasattr(value, "item"):  # numpy and torch values
            kind = getattr(dtype, "kind", None)
            integral = kind in ("i", "u") if kind is not None else str(dtype).startswith(("torch.int", "torch.uint"))
            ndim = getattr(value, "ndim", None)
            if not integral or (ndim if ndim is not None else value.dim()) != 0:  # type: ignore[attr-defined]  # torch
                return None
            return int(value.item())
        return operator.index(value)  # type: ignore[arg-type]  # objects implementing __index__
    except Exception:  # TypeError, or whatever a hostile __index__ / item() raises
        return None


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
    found = exact_int(value)
    if found is None:
        raise InvalidArgumentTypeError(
            f"{name} must be an int; got {type(value).__name__} {value!r}. Pass a whole number."
        )
    value = found
    if value < minimum:
        raise InvalidArgumentError(
            f"{name} must be >= {minimum}; got {value}. Pass a positive count.", argument=name, value=value
        )
    return value


def check_instance(name: str, value: object, cls: type[_T], maker: str) -> _T:
    """Validate an argument that must be an object this library made (a block, a stream, a group).

    Args:
        name: Argument name for the message.
        value: What the caller passed.
        cls: The type it must have.
        maker: The call that makes one, for the message (``"kv_block_alloc"``).

    Returns:
        The value.

    Raises:
        InvalidArgumentTypeError: ``value`` is not a ``cls``.
    """
    if not isinstance(value, cls):
        raise InvalidArgumentTypeError(f"{name} must be a {cls.__name__} from {maker}(); got {type(value).__name__}.")
    return value


def check_timeout(name: str, value: object) -> float:
    """Validate a timeout in seconds: a finite, positive real number.

    Args:
        name: Argument name for the message.
        value: What the caller passed.

    Returns:
        The timeout as a float, at most ``threading.TIMEOUT_MAX`` (centuries): larger finite values
        are clamped to it, so no wait, barrier or ``timedelta`` built from it can overflow.

    Raises:
        InvalidArgumentTypeError: not a number.
        InvalidArgumentError: not finite or not positive.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgumentTypeError(f"{name} must be a number of seconds; got {type(value).__name__} {value!r}.")
    try:
        t = float(value)
    except OverflowError:  # an int beyond any float
        t = math.inf
    if not math.isfinite(t) or t <= 0:
        raise InvalidArgumentError(f"{name} must be a finite number of seconds > 0; got {value!r}.")
    return min(t, threading.TIMEOUT_MAX)


def byte_view(name: str, data: object) -> memoryview:
    """A flat byte view of bytes-like ``data`` (no copy).

    Args:
        name: Argument name for the message.
        data: ``bytes``, ``bytearray``, ``memoryview``, a numpy array or any buffer.

    Returns:
        ``memoryview(data).cast("B")``.

    Raises:
        InvalidArgumentTypeError: ``data`` does not expose a contiguous buffer.
    """
    try:
        return memoryview(data).cast("B")  # type: ignore[arg-type]  # non-buffers raise TypeError, mapped below
    except TypeError as exc:
        raise InvalidArgumentTypeError(
            f"{name} must be bytes-like (bytes, bytearray, memoryview, numpy array); got {type(data).__name__}."
        ) from exc


_FIRST_SLEEP_S = 50e-6
_MAX_SLEEP_S = 1e-3


class Deadline:
    """A validated ``timeout`` and the moment it expires.

    Args:
        timeout: Seconds (finite, > 0), or ``None`` for no limit.

    Raises:
        InvalidArgumentTypeError: ``timeout`` is not a number (``bool`` and ``str`` included).
        InvalidArgumentError: ``timeout`` is nan, infinite, zero or negative.
    """

    __slots__ = ("end", "timeout")

    def __init__(self, timeout: object) -> None:
        self.timeout: float | None = None if timeout is None else check_timeout("timeout", timeout)
        self.end: float | None = None if self.timeout is None else time.monotonic() + self.timeout

    def remaining(self) -> float | None:
        """Seconds left (never negative), or ``None`` without a limit."""
        return None if self.end is None else max(0.0, self.end - time.monotonic())

    def expired(self, what: str) -> StreamTimeoutError:
        """The error for a wait on ``what`` that ran out of time.

        Args:
            what: The thing waited for ("stream 3 on cpu", "event" ...).

        Returns:
            The error to raise.
        """
        return StreamTimeoutError(
            f"{what} did not finish within timeout={self.timeout:g}s; the work is still queued. "
            "Wait again (with a longer timeout) or find what the stream is blocked on.",
            timeout=self.timeout,
        )


def poll_until(done: Callable[[], bool], deadline: Deadline, what: str) -> None:
    """Poll ``done()`` with short sleeps (50 us growing to 1 ms) until it is true or time runs out.

    Args:
        done: A non-blocking completion check (``native.query``).
        deadline: The deadline (must have a limit).
        what: For the timeout message.

    Raises:
        StreamTimeoutError: ``done()`` stayed false until the deadline.
    """
    sleep = _FIRST_SLEEP_S
    while not done():
        left = deadline.remaining()
        if left is not None and left <= 0.0:
            raise deadline.expired(what)
        time.sleep(sleep if left is None else min(sleep, left))
        sleep = min(2 * sleep, _MAX_SLEEP_S)
